"""A chain of real btrfs snapshots whose days do everything a send stream can say, their send
streams and file indexes, and the truth to compare a replay with: the snapshots themselves.

``make_chain(mnt, workdir)`` makes a subvolume on the mounted btrfs ``mnt``, runs each day of
``DAYS`` on it (or the days given), takes a read-only snapshot after each, and sends them (the
first full, the others ``-p`` the day before) into files, indexed by the real
``StreamIndexer``.  ``snapshot_state`` reads a snapshot as ``os.lstat`` sees it;
``contents`` reassembles a replayed file from the raw stream files.  Used by the tree's tests
and by ``restore --path``'s.
"""

from __future__ import annotations

import fcntl
import io
import os
import random
import stat
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from btrsendd.fileindex.entries import Entry
from btrsendd.fileindex.records import Index
from btrsendd.fileindex.storedform import read_index
from btrsendd.pipeline.sendindex import index_stream

Day = Callable[[Path], None]

#: ``FICLONERANGE``: share a range of one file's extents into another (a partial reflink).
FICLONERANGE = 0x4020940D
BLOCK = 4096


@dataclass(frozen=True)
class ChainDay:
    """One day of the chain: its read-only snapshot, raw send stream and file index."""

    backup_id: str
    snapshot: Path
    stream: Path
    index: Index


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def make_chain(
    mnt: Path,
    workdir: Path,
    days: Sequence[Day] | None = None,
    name: str = "chain",
    send_args: Sequence[str] = (),
) -> list[ChainDay]:
    """Days ``days`` (default ``DAYS``) of subvolume ``mnt/name``, snapshotted, sent (with
    ``send_args``, such as ``--proto 2``), indexed."""
    source = mnt / name
    run("btrfs", "subvolume", "create", source)
    chain: list[ChainDay] = []
    for number, day in enumerate(DAYS if days is None else days):
        day(source)
        backup_id = f"{name}-day{number}"
        snapshot = mnt / backup_id
        run("btrfs", "subvolume", "snapshot", "-r", source, snapshot)
        stream = workdir / f"{backup_id}.stream"
        parent = ["-p", str(chain[-1].snapshot)] if chain else []
        run("btrfs", "-q", "send", *send_args, *parent, "-f", stream, snapshot)
        out = io.BytesIO()
        with stream.open("rb") as raw:
            index_stream(raw, out)
        out.seek(0)
        chain.append(ChainDay(backup_id, snapshot, stream, read_index(out, backup_id)))
    return chain


# -- the days --------------------------------------------------------------------------------


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _clone_range(source: Path, target: Path, src_offset: int, length: int, offset: int) -> None:
    with source.open("rb") as src, target.open("r+b") as dst:
        fcntl.ioctl(dst.fileno(), FICLONERANGE, struct.pack("qQQQ", src.fileno(), src_offset,
                                                            length, offset))  # fmt: skip


def _ns(day: int, second: int) -> tuple[int, int]:
    at = (1_600_000_000 + day * 86_400 + second) * 10**9 + 123_456_789
    return at, at


def day0(root: Path) -> None:
    """A varied tree: data, holes, preallocation, links, xattrs, owners, odd names, nodes."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "big.bin").write_bytes(_data(1, 1_000_000))
    (root / "docs" / "readme.txt").write_text("hello btrfs\n" * 500)
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "empty").touch()
    with (root / "sparse.img").open("wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(3 * 1024 * 1024)
        f.write(_data(2, 10_000))
    run("fallocate", "-l", "300000", root / "prealloc")
    (root / "odd name\nnewline").write_text("odd\n")
    (root / "linked").write_text("one inode, two names\n")
    os.link(root / "linked", root / "a" / "linked-too")
    os.symlink("docs/readme.txt", root / "readme-link")
    os.symlink("/nowhere/at/all", root / "dangling")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-dev", stat.S_IFCHR | 0o640, os.makedev(1, 3))
    os.setxattr(root / "docs" / "readme.txt", "user.color", b"blue")
    os.setxattr(root / "a", "user.dir", b"on a directory")
    owned = root / "owned.txt"
    owned.write_text("someone else's\n")
    os.chown(owned, 1234, 5678)
    os.chmod(owned, 0o640)
    os.chmod(root / "a" / "b", 0o750)
    run("cp", "--reflink=always", root / "big.bin", root / "big-copy.bin")
    _clone_range(root / "big.bin", root / "docs" / "readme.txt", 0, BLOCK, 2 * BLOCK)
    os.utime(root / "empty", ns=_ns(0, 1))


def day1(root: Path) -> None:
    """Modify, append, rename files and a directory, link, reflink from yesterday's files
    (one rewritten since: its bytes are only in the parent), punch holes."""
    run("cp", "--reflink=always", root / "big.bin", root / "from-parent.bin")
    (root / "big.bin").write_bytes(_data(4, 1_000_000))
    with (root / "big.bin").open("r+b") as f:
        f.seek(500_000)
        f.write(b"changed in the middle" * 10)
    with (root / "docs" / "readme.txt").open("a") as f:
        f.write("appended on day 1\n")
    os.rename(root / "owned.txt", root / "docs" / "owned-renamed.txt")
    os.rename(root / "a" / "b", root / "moved-b")
    os.link(root / "big-copy.bin", root / "docs" / "big-link")
    os.unlink(root / "a" / "linked-too")
    run("cp", "--reflink=always", root / "sparse.img", root / "sparse-copy.img")
    run("fallocate", "-p", "-o", str(2 * BLOCK), "-l", str(8 * BLOCK), root / "big-copy.bin")
    os.setxattr(root / "linked", "user.new", b"set on day 1")
    os.removexattr(root / "docs" / "readme.txt", "user.color")
    os.chmod(root / "big.bin", 0o600)
    os.chown(root / "empty", 42, 43)
    os.utime(root / "linked", ns=_ns(1, 2))
    os.truncate(root / "prealloc", 100_000)
    os.truncate(root / "sparse.img", 9 * 1024 * 1024)
    os.unlink(root / "fifo")
    os.unlink(root / "dangling")
    os.symlink("big.bin", root / "dangling")
    (root / "new-dir").mkdir()
    (root / "new-dir" / "new.txt").write_text("new on day 1\n")
    (root / "new-dir" / "new.bin").write_bytes(_data(5, 200_000))


def day2(root: Path) -> None:
    """Swap two directories' names (btrfs send's orphan names), delete a tree, re-create a
    deleted name, clone parts of yesterday's files into a new one, reflink a file whose
    directory is then renamed and which is then rewritten (so only the parent's old path
    holds the clone's source)."""
    run("cp", "--reflink=always", root / "new-dir" / "new.bin", root / "copy-of-new.bin")
    (root / "new-dir" / "new.bin").write_bytes(_data(6, 100_000))
    os.rename(root / "new-dir", root / "renamed-dir")
    os.rename(root / "a", root / "swap")
    os.rename(root / "moved-b", root / "a")
    os.rename(root / "swap", root / "moved-b")
    (root / "a" / "c" / "deep.txt").unlink()
    (root / "a" / "c").rmdir()
    (root / "a" / "c").mkdir()
    (root / "a" / "c" / "deep.txt").write_text("a new deep file\n")
    os.unlink(root / "empty")
    (root / "empty").write_text("not empty any more\n")
    (root / "pieces.bin").write_bytes(_data(3, 5 * BLOCK))
    _clone_range(root / "big.bin", root / "pieces.bin", 4 * BLOCK, 2 * BLOCK, BLOCK)
    _clone_range(root / "sparse-copy.img", root / "pieces.bin", 3 * 1024 * 1024, BLOCK, 0)
    os.rename(root / "docs" / "big-link", root / "big-link")
    os.rename(root / "linked", root / "renamed-dir" / "linked")
    os.mkfifo(root / "fifo")


def day3(root: Path) -> None:
    """Many small random changes to many small files."""
    rng = random.Random(3)
    many = root / "many"
    many.mkdir()
    for i in range(200):
        (many / f"f{i:03}").write_bytes(rng.randbytes(rng.randrange(0, 20_000)))
    for i in rng.sample(range(200), 40):
        os.unlink(many / f"f{i:03}")
    names = [n for n in sorted(os.listdir(many))]
    for n in rng.sample(names, 30):
        os.rename(many / n, root / "docs" / f"from-many-{n}")
    os.truncate(root / "big.bin", 300_000)
    with (root / "big.bin").open("r+b") as f:
        f.seek(600_000)
        f.write(b"beyond a hole")


def day4(root: Path) -> None:
    """Reshuffle directories so that btrfs send must order its renames (a parent moved into
    its former child), replace files by rename, turn a directory into a file, and keep a
    file only by its hard link."""
    (root / "p" / "q" / "r").mkdir(parents=True)
    (root / "p" / "q" / "r" / "leaf.txt").write_text("leaf\n")
    (root / "p" / "top.txt").write_text("top\n")
    (root / "victim.txt").write_text("replaced by rename tomorrow\n")
    (root / "dir-then-file").mkdir()
    (root / "dir-then-file" / "inside").write_text("x\n")
    os.link(root / "big-link", root / "only-link")


def day5(root: Path) -> None:
    os.rename(root / "p" / "q", root / "q-top")
    os.rename(root / "p", root / "q-top" / "r" / "p-below")
    os.rename(root / "a", root / "q-top" / "a-moved")
    os.replace(root / "docs" / "readme.txt", root / "victim.txt")
    (root / "dir-then-file" / "inside").unlink()
    (root / "dir-then-file").rmdir()
    (root / "dir-then-file").write_text("now a file\n")
    os.unlink(root / "big-link")
    os.unlink(root / "big-copy.bin")
    with (root / "only-link").open("r+b") as f:
        f.seek(10)
        f.write(b"written through the last name")


DAYS: tuple[Day, ...] = (day0, day1, day2, day3, day4, day5)


# -- the truth ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A path of a snapshot as ``os.lstat`` and friends see it."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ino: int
    target: str | None
    rdev: int
    xattrs: tuple[tuple[bytes, bytes], ...]


_KINDS = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev",
}  # fmt: skip


def snapshot_state(root: Path) -> dict[str, Seen]:
    """Every path of the tree at ``root`` (relative, '/'-separated, "" for the root)."""
    found: dict[str, Seen] = {}
    walked = ((Path(top), [*dirs, *files]) for top, dirs, files in os.walk(root))
    for top, names in [(root.parent, [root.name]), *walked]:
        for name in names:
            path = top / name
            st = os.lstat(path)
            names = os.listxattr(path, follow_symlinks=False)
            xattrs = tuple(
                sorted((n.encode(), os.getxattr(path, n, follow_symlinks=False)) for n in names)
            )
            kind = _KINDS[stat.S_IFMT(st.st_mode)]
            found["" if path == root else str(path.relative_to(root))] = Seen(
                kind=kind,
                mode=st.st_mode,
                uid=st.st_uid,
                gid=st.st_gid,
                size=st.st_size if kind in ("file", "symlink") else 0,
                mtime_ns=st.st_mtime_ns,
                ino=st.st_ino,
                target=os.readlink(path) if kind == "symlink" else None,
                rdev=st.st_rdev if kind in ("chardev", "blockdev") else 0,
                xattrs=xattrs,
            )
    return found


def seen_in_tree(entry: Entry) -> Seen:
    """What the snapshot should show for ``entry`` (its ``ino`` is the tree's own number)."""
    return Seen(
        kind=entry.kind,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size,
        mtime_ns=entry.mtime_ns,
        ino=entry.inode,
        target=entry.target,
        rdev=entry.rdev,
        xattrs=entry.xattrs,
    )


def contents(entry: Entry, streams: Mapping[str, Path]) -> bytes:
    """The bytes of the replayed file ``entry``: its pieces read from the raw stream files
    (``streams`` by backup id), zeros for holes and allocated ranges."""
    data = bytearray(entry.size)
    for piece in entry.pieces:
        if piece.backup_id is None:
            continue
        assert piece.unrestorable is None, piece.unrestorable
        with streams[piece.backup_id].open("rb") as f:
            f.seek(piece.stream_offset)
            chunk = f.read(piece.length)
        assert len(chunk) == piece.length
        data[piece.offset : piece.offset + piece.length] = chunk
    return bytes(data[: entry.size])


def hardlink_groups(inodes: Mapping[str, int]) -> set[frozenset[str]]:
    """The sets of paths that share an inode, of two paths or more."""
    groups: dict[int, set[str]] = {}
    for path, ino in inodes.items():
        groups.setdefault(ino, set()).add(path)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def without_ino(seen: Seen) -> Seen:
    return Seen(**{**seen.__dict__, "ino": 0})


def expected_changes(old: dict[str, Seen], new: dict[str, Seen]) -> dict[str, set[object]]:
    """The differences of two snapshots of one subvolume, told by inode numbers (which a
    snapshot keeps): a name of an inode is its directory's inode and the name."""

    def links(state: dict[str, Seen]) -> dict[tuple[int, str], tuple[int, str]]:
        found = {(0, ""): (state[""].ino, "")}
        for path, seen in state.items():
            if path:
                parent, _, name = path.rpartition("/")
                found[(state[parent].ino, name)] = (seen.ino, path)
        return found

    before, after = links(old), links(new)
    gone: dict[int, list[str]] = {}
    came: dict[int, list[str]] = {}
    for link, (ino, path) in before.items():
        if after.get(link, (None,))[0] != ino:
            gone.setdefault(ino, []).append(path)
    for link, (ino, path) in after.items():
        if before.get(link, (None,))[0] != ino:
            came.setdefault(ino, []).append(path)
    result: dict[str, set[object]] = {"added": set(), "deleted": set(), "renamed": set()}
    for ino, paths in gone.items():
        new_paths = sorted(came.pop(ino, []))
        result["renamed"] |= set(zip(sorted(paths), new_paths, strict=False))
        result["deleted"] |= set(sorted(paths)[len(new_paths) :])
        result["added"] |= set(new_paths[len(paths) :])
    for paths in came.values():
        result["added"] |= set(paths)
    return result


def changed_paths(
    old: dict[str, Seen], new: dict[str, Seen], old_root: Path, new_root: Path
) -> set[str]:
    """Paths (new) of the inodes whose contents or metadata differ, but for their new
    names (which ``expected_changes`` tells as added)."""
    by_ino: dict[int, str] = {}
    for path, seen in old.items():
        by_ino.setdefault(seen.ino, path)
    added = expected_changes(old, new)["added"]
    found = set()
    for path, seen in new.items():
        old_path = by_ino.get(seen.ino)
        if old_path is None or path in added:
            continue
        then = old[old_path]
        a, b = without_ino(then), without_ino(seen)
        if seen.kind == "dir":
            a, b = Seen(**{**a.__dict__, "mtime_ns": 0}), Seen(**{**b.__dict__, "mtime_ns": 0})
        differs = a != b
        if not differs and seen.kind == "file":
            differs = (old_root / old_path).read_bytes() != (new_root / path).read_bytes()
        if differs:
            found.add(path)
    return found

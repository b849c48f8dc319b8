"""Paths restored by ``restore --path`` compared with the same paths of a snapshot.

Stricter than ``treediff`` (which a whole restore is held to) where a path restore can be:
access times, directory mtimes, device numbers and holes count too.  Holes are compared one
way: every block that is a hole in the snapshot must be one in the restored file (a restore
also turns written blocks of zeros into holes, as ``cp --sparse=always`` does; contents are
compared byte for byte anyway).  Everything is stat'ed before any file is read, so reading
contents cannot move an access time before it is compared.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from btrsendd.loopfs import loop_filesystem

BLOCK = 4096

#: What is compared of one path, but its data blocks (see ``_holes_kept``).
Shape = tuple[object, ...]


def loop_ext4(
    workdir: Path, name: str = "ext4", size: int = 1024**3
) -> AbstractContextManager[Path]:
    """A fresh ext4 on a sparse loop image, mounted; unmounted and deleted at the end."""
    return loop_filesystem(workdir / f"{name}.img", workdir / name, size, ("mkfs.ext4", "-q", "-F"))


def _data(path: Path) -> list[tuple[int, int]]:
    """The file's data ranges (SEEK_DATA / SEEK_HOLE), widened to whole blocks."""
    ranges: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        end, pos = os.fstat(fd).st_size, 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start // BLOCK * BLOCK, -(-pos // BLOCK) * BLOCK))
    finally:
        os.close(fd)
    return ranges


def _walk(root: Path, rel: str) -> Iterator[str]:
    """``rel`` and every path below it, relative to ``root``."""
    yield rel
    path = root / rel if rel else root
    if path.is_dir() and not path.is_symlink():
        for child in sorted(os.listdir(path)):
            yield from _walk(root, f"{rel}/{child}" if rel else child)


def state(root: Path, paths: Sequence[str]) -> dict[str, Shape]:
    """Every path under each of ``paths`` (relative to ``root``, "" the root itself) and
    what a restore must keep of it; data ranges under ``("data", path)``."""
    found: dict[str, Shape] = {}
    inodes: dict[int, list[str]] = {}
    stats: dict[str, os.stat_result] = {}
    for top in paths:
        for rel in _walk(root, top):
            path = root / rel if rel else root
            st = path.lstat()
            stats[rel] = st
            xattrs = {
                n: os.getxattr(path, n, follow_symlinks=False)
                for n in os.listxattr(path, follow_symlinks=False)
            }
            found[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                st.st_atime_ns,
                st.st_mtime_ns,
                st.st_rdev,
                sorted(xattrs.items()),
            )
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
    # Contents last: reading may move access times, which were taken above.
    result: dict[str, Shape] = {}
    for rel, shape in found.items():
        path = root / rel if rel else root
        st = stats[rel]
        content: object = None
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            with path.open("rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest()
            result[f"data:{rel}"] = tuple(_data(path))
        result[rel] = (*shape, content)
    # Names outside ``paths`` are not restored: a group is the names among ``paths``.
    groups = (tuple(sorted(g)) for g in inodes.values() if len(g) > 1)
    result["<hardlinks>"] = tuple(sorted(groups))
    return result


def _holes_kept(snapshot: Sequence[tuple[int, int]], restored: Sequence[tuple[int, int]]) -> bool:
    """Whether every data block of the restored file is one in the snapshot."""
    return all(any(s <= lo and hi <= e for s, e in snapshot) for lo, hi in restored)


def differences(snapshot: Path, restored: Path, paths: Sequence[str]) -> list[str]:
    """How the ``paths`` (and all below them) differ between the two roots; [] if not."""
    want, got = state(snapshot, paths), state(restored, paths)
    problems = [f"missing {k!r}" for k in sorted(set(want) - set(got))]
    problems += [f"extra {k!r}" for k in sorted(set(got) - set(want))]
    for key in sorted(set(want) & set(got)):
        if key.startswith("data:"):
            if not _holes_kept(want[key], got[key]):  # type: ignore[arg-type]
                problems.append(f"{key[5:]!r}: holes filled: {want[key]} -> {got[key]}")
        elif want[key] != got[key]:
            problems.append(f"{key!r}: {want[key]} != {got[key]}")
    return problems


def restored_paths(root: Path) -> set[str]:
    """Every path in a restored tree, relative to it."""
    return set(_walk(root, "")) - {""}

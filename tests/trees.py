"""Test data that changes day by day, and a file-by-file comparison of two trees.

The data covers what a backup tool most often gets wrong: hardlinks, symlinks, xattrs, sparse
files, odd names (a space and a newline), modes and owners, renames and deletions between days.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

ODD_NAME = "odd name\nwith newline.txt"


def populate(root: Path, seed: int = 1, big: int = 0) -> None:
    """Day 0: a varied tree, plus ``big`` bytes of incompressible data to span volumes."""
    rng = random.Random(seed)
    if big:
        (root / "big.dat").write_bytes(rng.randbytes(big))
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("hello btrfs\n" * 200)
    (root / "bin.dat").write_bytes(rng.randbytes(2_500_000))
    (root / "zeros.dat").write_bytes(bytes(200_000))
    (root / ODD_NAME).write_text("space and newline\n")
    (root / "linked-a").write_text("same inode\n")
    os.link(root / "linked-a", root / "docs" / "linked-b")
    os.symlink("docs/readme.txt", root / "readme-link")
    os.symlink("/nonexistent/target", root / "dangling-link")
    x = root / "xattr.txt"
    x.write_text("has xattrs\n")
    os.setxattr(x, "user.btrsendd", b"value-0")
    with open(root / "sparse.img", "wb") as f:
        f.truncate(64 * 1024 * 1024)
        f.seek(32 * 1024 * 1024)
        f.write(b"middle of a hole")
    owned = root / "owned.txt"
    owned.write_text("owned by someone else\n")
    os.chown(owned, 1234, 5678)
    os.chmod(owned, 0o640)
    (root / "empty").touch()
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    for i in range(20):
        (deep / f"small-{i}.txt").write_text(f"small file {i}\n")


def mutate(root: Path, day: int) -> None:
    """Day ``day`` (>= 1): add, modify, rename and delete files, change an xattr."""
    rng = random.Random(day)
    (root / f"added-{day}.txt").write_text(f"added on day {day}\n" * day)
    with open(root / "docs" / "readme.txt", "a") as f:
        f.write(f"appended on day {day}\n")
    data = bytearray((root / "bin.dat").read_bytes())
    pos = rng.randrange(len(data) - 100)
    data[pos : pos + 100] = rng.randbytes(100)
    (root / "bin.dat").write_bytes(bytes(data))
    os.setxattr(root / "xattr.txt", "user.btrsendd", f"value-{day}".encode())
    if (root / f"added-{day - 1}.txt").exists():
        os.rename(root / f"added-{day - 1}.txt", root / f"renamed-{day - 1}.txt")
    if (root / f"renamed-{day - 2}.txt").exists():
        (root / f"renamed-{day - 2}.txt").unlink()
    with open(root / "sparse.img", "r+b") as f:
        f.seek(day * 1024 * 1024)
        f.write(f"day {day}".encode())
    (root / "a" / "b" / "c" / f"small-{day % 20}.txt").write_text(f"changed on {day}\n")


def _entry(path: Path) -> tuple[object, ...]:
    st = path.lstat()
    kind = stat.S_IFMT(st.st_mode)
    xattrs = {}
    if not stat.S_ISLNK(st.st_mode):
        xattrs = {name: os.getxattr(path, name) for name in sorted(os.listxattr(path))}
    if stat.S_ISLNK(st.st_mode):
        content: object = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        content = path.read_bytes()
    else:
        content = None
    mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None
    return (
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        st.st_size,
        mtime,
        xattrs,
        content,
    )


def snapshot_of(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything about a tree that a restore must reproduce, keyed by relative path.

    Hardlinks are captured as groups of paths sharing an inode, so a restore that turns them
    into copies fails the comparison.
    """
    result: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            result[rel] = _entry(path)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
    result["<hardlink groups>"] = tuple(sorted(tuple(sorted(g)) for g in inodes.values()))
    return result


def assert_same_tree(expected: Path, actual: Path) -> None:
    """Fail with the first differing paths if the trees differ in anything restore keeps."""
    want, got = snapshot_of(expected), snapshot_of(actual)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differing = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    assert not (missing or extra or differing), (
        f"trees differ: missing {missing[:5]}, extra {extra[:5]}, differing {differing[:5]}"
    )


def is_sparse(path: Path) -> bool:
    """Whether most of the file's length is holes (allocated blocks well below its size)."""
    st = path.stat()
    return st.st_blocks * 512 < st.st_size // 2

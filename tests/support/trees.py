"""Test data that changes day by day, and a file-by-file comparison of two trees.

The data covers what a backup tool most often gets wrong: hardlinks, symlinks, xattrs, sparse
files, odd names (a space and a newline), modes and owners, renames and deletions between days.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from btrsendd.treediff import Entry, diff_trees, tree_entries

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


def snapshot_of(root: Path) -> dict[str, Entry]:
    """Everything about a tree that a restore must reproduce (see ``btrsendd.treediff``)."""
    return tree_entries(root)


def assert_same_tree(expected: Path, actual: Path) -> None:
    """Fail with the first differing paths if the trees differ in anything restore keeps."""
    diff = diff_trees(expected, actual)
    assert not diff, f"trees differ: {diff.summary()}"


def is_sparse(path: Path) -> bool:
    """Whether most of the file's length is holes (allocated blocks well below its size)."""
    st = path.stat()
    return st.st_blocks * 512 < st.st_size // 2

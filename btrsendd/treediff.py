"""Compare two directory trees in everything a restore must reproduce.

``verify --deep`` checks a restored day against its local snapshot with this, and the tests
check every restore with it, so both hold restores to the same standard: file type, mode,
owner, size, mtime, xattrs, content, symlink targets, and which paths are hardlinks of each
other.  Content is compared by SHA-256, read in chunks, so trees of any size fit in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: What is compared for one path (see ``_entry``).
Entry = tuple[object, ...]

#: The key under which ``tree_entries`` records hardlink groups.
HARDLINKS = "<hardlink groups>"


def _entry(path: Path, st: os.stat_result) -> Entry:
    kind = stat.S_IFMT(st.st_mode)
    xattrs = {}
    if not stat.S_ISLNK(st.st_mode):
        xattrs = {name: os.getxattr(path, name) for name in sorted(os.listxattr(path))}
    if stat.S_ISLNK(st.st_mode):
        content: object = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        with path.open("rb") as f:
            content = hashlib.file_digest(f, "sha256").hexdigest()
    else:
        content = None
    # A directory's mtime changes whenever an entry is added, which receiving does in its
    # own order; files keep theirs.
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


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _names(directory: int) -> list[str]:
    with os.scandir(directory) as entries:
        return sorted((entry.name for entry in entries), reverse=True)


def _move(here: int, name: str) -> int:
    """The directory ``name`` (or ``..``) of ``here``, opened; ``here`` is then closed."""
    there = os.open(name, _DIRECTORY, dir_fd=here)
    os.close(here)
    return there


def tree_entries(root: Path) -> dict[str, Entry]:
    """Everything about a tree that a restore must reproduce, keyed by relative path.

    Hardlinks are captured as groups of paths sharing an inode (under ``HARDLINKS``), so a
    restore that turns them into copies differs.

    The walk holds one directory open at a time, goes down by name and back up by ``..``,
    and names each entry through that descriptor: however deep the tree (a user can nest
    thousands of directories in a source), it neither recurses nor builds a path longer than
    the kernel accepts.  The trees compared are read-only snapshots, which nothing changes.
    """
    result: dict[str, Entry] = {}
    inodes: dict[int, list[str]] = {}
    here = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # For each directory entered: its path relative to ``root``, and the names not yet
        # seen in it.
        stack = [("", _names(here))]
        while stack:
            prefix, names = stack[-1]
            if not names:
                stack.pop()
                if stack:
                    here = _move(here, "..")
                continue
            name = names.pop()
            rel = f"{prefix}/{name}" if prefix else name
            st = os.stat(name, dir_fd=here, follow_symlinks=False)
            result[rel] = _entry(Path(f"/proc/self/fd/{here}/{name}"), st)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
            if stat.S_ISDIR(st.st_mode):
                here = _move(here, name)
                stack.append((rel, _names(here)))
    finally:
        os.close(here)
    result[HARDLINKS] = tuple(sorted(tuple(sorted(g)) for g in inodes.values()))
    return result


@dataclass(frozen=True)
class TreeDiff:
    """Paths only in the expected tree, only in the actual one, and in both but different."""

    missing: list[str]
    extra: list[str]
    differing: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.differing)

    def summary(self, limit: int = 5) -> str:
        """One line naming the first ``limit`` paths of each kind of difference."""
        parts = [
            f"{what} {len(paths)} ({', '.join(repr(p) for p in paths[:limit])}"
            + (", ...)" if len(paths) > limit else ")")
            for what, paths in (
                ("missing", self.missing),
                ("extra", self.extra),
                ("differing", self.differing),
            )
            if paths
        ]
        return "; ".join(parts) if parts else "identical"


def diff_trees(expected: Path, actual: Path) -> TreeDiff:
    """How ``actual`` differs from ``expected``."""
    want, got = tree_entries(expected), tree_entries(actual)
    return TreeDiff(
        missing=sorted(set(want) - set(got)),
        extra=sorted(set(got) - set(want)),
        differing=sorted(k for k in set(want) & set(got) if want[k] != got[k]),
    )

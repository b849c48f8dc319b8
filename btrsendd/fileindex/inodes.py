"""The inodes a replay keeps, and marks: an earlier state kept readable by an undo log.

The first change of an inode after a mark saves a copy of it into the mark, and every
directory walked to reach what changes is stamped with the epoch of the newest mark: so a mark
reads the tree as it was (``old``), and ``diff`` visits only the directories stamped since
(``changed_below``).  ``Namespace`` finds inodes by path and keeps both up to date; the
records' effects are ``tree.py``'s.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator

from btrsendd.fileindex.entries import Entry, Kind, Piece

#: What ``btrfs receive`` creates each with, until the stream's CHMOD and CHOWN.
CREATED_MODE = {"file": stat.S_IFREG | 0o600, "dir": stat.S_IFDIR | 0o700}


class Refused(Exception):
    """A record that ``btrfs receive`` would fail on; the replay names the record."""


class Inode:
    """One inode of the tree.  ``children`` for directories, ``pieces`` for files."""

    __slots__ = (
        "atime",
        "children",
        "fileattr",
        "gid",
        "ino",
        "kind",
        "mode",
        "mtime",
        "nlink",
        "pieces",
        "rdev",
        "saved",
        "size",
        "stamp",
        "target",
        "uid",
        "xattrs",
    )  # fmt: skip

    def __init__(self, ino: int, kind: Kind, mode: int, epoch: int) -> None:
        self.ino = ino
        self.kind: Kind = kind
        self.mode = mode
        self.uid = self.gid = self.size = self.atime = self.mtime = self.rdev = 0
        self.fileattr = 0
        #: Names in the tree (``diff`` looks for those of a changed file it did not visit).
        self.nlink = 0
        self.xattrs: dict[bytes, bytes] | None = None
        self.target: str | None = None
        self.pieces: list[Piece] | None = [] if kind == "file" else None
        self.children: dict[str, Inode] | None = {} if kind == "dir" else None
        #: The epoch in which this inode was last saved into the active marks (or created).
        self.saved = epoch
        #: The epoch in which something below this directory (or itself) last changed.
        self.stamp = epoch

    def copy(self) -> Inode:
        twin = Inode.__new__(Inode)
        for name in Inode.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.xattrs = None if self.xattrs is None else dict(self.xattrs)
        twin.pieces = None if self.pieces is None else list(self.pieces)
        twin.children = None if self.children is None else dict(self.children)
        return twin

    def entry(self, path: str) -> Entry:
        return Entry(
            path=path,
            kind=self.kind,
            mode=self.mode,
            uid=self.uid,
            gid=self.gid,
            size=self.size,
            atime_ns=self.atime,
            mtime_ns=self.mtime,
            inode=self.ino,
            target=self.target,
            rdev=self.rdev,
            xattrs=tuple(sorted(self.xattrs.items())) if self.xattrs else (),
            pieces=tuple(self.pieces) if self.pieces else (),
            fileattr=self.fileattr,
        )


class Mark:
    """The tree as it was when the mark was taken, readable while the tree goes on changing.

    ``saved`` holds the state, as it was, of every inode changed since; the others are as
    they were.  ``reset`` tells that a full backup replaced the whole tree since.
    """

    def __init__(self, tree: Namespace, epoch: int) -> None:
        self._tree = tree
        self.epoch = epoch
        self.root = tree.root
        self.saved: dict[int, Inode] = {}
        self.reset = False

    def old(self, inode: Inode) -> Inode:
        return self.saved.get(inode.ino, inode)

    def changed_below(self, directory: Inode) -> bool:
        """Whether anything in ``directory`` or beneath it may have changed since the mark."""
        return self.reset or directory.stamp >= self.epoch

    def lookup(self, path: str) -> Inode | None:
        node = self.old(self.root)
        for name in names(path):
            if node.children is None:
                return None
            child = node.children.get(name)
            if child is None:
                return None
            node = self.old(child)
        return node

    def entries(self, under: str = "") -> Iterator[Entry]:
        """``under`` and everything beneath it as it was, parents before children."""
        try:
            top = self.lookup(under)
        except Refused:
            top = None
        return walk(top, under, self.old)

    def release(self) -> None:
        """Stop keeping this state (each mark costs a copy of every inode changed since)."""
        self._tree.release(self)


class Namespace:
    """The inodes of a tree by path, and the marks kept of it."""

    def __init__(self) -> None:
        self._epoch = 0
        self._next_ino = 1
        self._marks: list[Mark] = []
        self._cached: tuple[str, Inode] | None = None
        self.root = self._new("dir")

    def mark(self) -> Mark:
        """Keep the tree's present state readable (``Mark``) until ``release``."""
        self._epoch += 1
        self._cached = None
        mark = Mark(self, self._epoch)
        self._marks.append(mark)
        return mark

    def release(self, mark: Mark) -> None:
        if mark in self._marks:
            self._marks.remove(mark)

    def _new(self, kind: Kind, mode: int | None = None) -> Inode:
        inode = Inode(self._next_ino, kind, CREATED_MODE.get(kind, 0) if mode is None else mode,
                      self._epoch)  # fmt: skip
        self._next_ino += 1
        return inode

    def _reset(self) -> None:
        self.root = self._new("dir", stat.S_IFDIR | 0o755)
        self._cached = None
        for mark in self._marks:
            mark.reset = True

    def _touch(self, inode: Inode) -> None:
        """Save ``inode`` into every mark that lacks it, before it changes."""
        if inode.saved != self._epoch:
            if self._marks:
                twin = inode.copy()
                for mark in self._marks:
                    mark.saved.setdefault(inode.ino, twin)
            inode.saved = self._epoch

    def _find(self, path: str) -> Inode | None:
        """The inode at ``path``, stamping the directories on the way (see the module doc)."""
        epoch = self._epoch
        node = self.root
        node.stamp = epoch
        for name in names(path):
            if node.children is None:
                raise Refused(f"{name!r}'s parent is not a directory")
            found = node.children.get(name)
            if found is None:
                return None
            node = found
            node.stamp = epoch
        return node

    def _at(self, path: str) -> Inode:
        cached = self._cached
        if cached is not None and cached[0] == path:
            return cached[1]
        node = self._find(path)
        if node is None:
            raise Refused("no such file or directory")
        self._cached = (path, node)
        return node

    def _file(self, path: str) -> Inode:
        node = self._at(path)
        if node.kind != "file":
            raise Refused(f"a {node.kind}, not a regular file")
        return node

    def _slot(self, path: str) -> tuple[Inode, str]:
        """The directory a name is made or removed in, and the name."""
        parent_path, _, name = path.rpartition("/")
        if not name:
            raise Refused("the subvolume's root has no name to change")
        parent = self._find(parent_path)
        if parent is None or parent.children is None:
            raise Refused("its parent is not a directory of the subvolume")
        names(name)  # refuses "." and ".."
        return parent, name

    def _insert(self, path: str, inode: Inode) -> None:
        parent, name = self._slot(path)
        assert parent.children is not None
        if name in parent.children:
            raise Refused("it exists already")
        self._touch(parent)
        parent.children[name] = inode
        inode.nlink += 1

    def _detach(self, path: str) -> tuple[Inode, Inode, str]:
        """The inode at ``path``, its directory and name (it must exist)."""
        parent, name = self._slot(path)
        assert parent.children is not None
        inode = parent.children.get(name)
        if inode is None:
            raise Refused("no such file or directory")
        self._cached = None
        return inode, parent, name


def names(path: str) -> list[str]:
    """The components of a record's path; refuses what btrfs send never writes."""
    if not path:
        return []
    parts = path.split("/")
    for name in parts:
        if name in ("", ".", ".."):
            raise Refused(f"the path {path!r} has a component {name!r}")
    return parts


def walk(top: Inode | None, path: str, view: Callable[[Inode], Inode]) -> Iterator[Entry]:
    if top is None:
        return
    stack = [(path, top)]
    while stack:
        here, inode = stack.pop()
        yield inode.entry(here)
        if inode.children:
            prefix = f"{here}/" if here else ""
            for name in sorted(inode.children, reverse=True):
                stack.append((prefix + name, view(inode.children[name])))

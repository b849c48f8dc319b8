"""What changed in a tree since a mark: added, deleted, changed and renamed paths.

Within one chain, inodes keep their identity from day to day, so a rename is told from a
delete and an add, and contents are compared by where their bytes lie (a file rewritten with
other bytes changed, even with the same size and mtime).  Only the directories stamped since
the mark are visited (``tree.py``), so a day that touched ten files costs ten files, not the
whole tree.  Across a full backup (a new chain) nothing carries over: paths are matched by
name, and files by their kind, size, mtime, mode, owner and xattrs, as rsync's quick check.

A renamed directory is one rename: what moved with it is not listed again, unless it
changed too.  A directory's own times change whenever an entry in it does; those changes
are not listed (the entries are).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from btrsendd.fileindex.entries import Entry
from btrsendd.fileindex.inodes import Inode, Mark
from btrsendd.fileindex.tree import Tree


@dataclass
class Changes:
    """Each list sorted by path; entries of deleted paths and ``before`` as they were."""

    added: list[Entry] = field(default_factory=list)
    deleted: list[Entry] = field(default_factory=list)
    #: (before, after): contents or metadata differ (the paths differ when also renamed).
    changed: list[tuple[Entry, Entry]] = field(default_factory=list)
    #: (before, after): the same file or directory under another name.
    renamed: list[tuple[Entry, Entry]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.deleted or self.changed or self.renamed)

    def sort(self) -> None:
        self.added.sort(key=_path)
        self.deleted.sort(key=_path)
        self.changed.sort(key=_after_path)
        self.renamed.sort(key=_after_path)


def _path(entry: Entry) -> str:
    return entry.path


def _after_path(pair: tuple[Entry, Entry]) -> str:
    return pair[1].path


def changes(tree: Tree, since: Mark) -> Changes:
    """What changed in ``tree`` since the mark ``since`` was taken."""
    result = _by_path(since, tree) if since.reset else _by_identity(since, tree)
    result.sort()
    return result


#: A name in a directory: (the directory's inode number, the name).
Link = tuple[int, str]


def _links(top: Inode, since: Mark, old: bool) -> dict[Link, tuple[Inode, str]]:
    """Every name in the directories changed since the mark, in the old or the new tree:
    what it names (the live inode) and its path there."""
    found: dict[Link, tuple[Inode, str]] = {(0, ""): (top, "")}
    stack = [(top, "")]
    while stack:
        directory, path = stack.pop()
        if not since.changed_below(directory):
            continue
        view = since.old(directory) if old else directory
        assert view.children is not None
        prefix = f"{path}/" if path else ""
        for name, child in view.children.items():
            child_path = prefix + name
            found[(directory.ino, name)] = (child, child_path)
            if child.children is not None:
                stack.append((child, child_path))
    return found


def _by_identity(since: Mark, tree: Tree) -> Changes:
    result = Changes()
    if not since.changed_below(tree.root):
        return result
    before = _links(since.root, since, old=True)
    after = _links(tree.root, since, old=False)
    gone: dict[int, list[tuple[Inode, str]]] = {}
    came: dict[int, list[tuple[Inode, str]]] = {}
    kept: list[tuple[Inode, str, str]] = []
    for link, (inode, path) in before.items():
        now = after.get(link)
        if now is not None and now[0] is inode:
            kept.append((inode, path, now[1]))
        else:
            gone.setdefault(inode.ino, []).append((inode, path))
    for link, (inode, path) in after.items():
        was = before.get(link)
        if was is None or was[0] is not inode:
            came.setdefault(inode.ino, []).append((inode, path))
    for ino, names in gone.items():
        new_names = sorted(came.pop(ino, []), key=_second)
        old_names = sorted(names, key=_second)
        for (inode, old_path), (_, new_path) in zip(old_names, new_names, strict=False):
            pair = (since.old(inode).entry(old_path), inode.entry(new_path))
            result.renamed.append(pair)
            if _differs(since.old(inode), inode, same_chain=True):
                result.changed.append(pair)
        for inode, old_path in old_names[len(new_names) :]:
            result.deleted.append(since.old(inode).entry(old_path))
        for inode, new_path in new_names[len(old_names) :]:
            result.added.append(inode.entry(new_path))
    for names in came.values():
        result.added.extend(inode.entry(path) for inode, path in names)
    for inode, old_path, new_path in kept:
        then = since.saved.get(inode.ino)
        if then is not None and _differs(then, inode, same_chain=True):
            result.changed.append((then.entry(old_path), inode.entry(new_path)))
    _other_names(tree, since, result, after)
    return result


def _other_names(
    tree: Tree, since: Mark, result: Changes, after: dict[Link, tuple[Inode, str]]
) -> None:
    """Add the names of changed hard-linked files in directories nothing else changed in
    (so not visited): one walk of the whole tree, only when there are such names."""
    visited = Counter(inode.ino for inode, _ in after.values())
    inodes = {inode.ino: inode for inode, _ in after.values()}
    wanted = {b.inode for _, b in result.changed if visited[b.inode] < inodes[b.inode].nlink}
    if not wanted:
        return
    listed = {b.path for _, b in result.changed}
    for path, inode in _walk(tree.root, None):
        if inode.ino in wanted and path not in listed:
            # In a directory that did not change: the same name as before.
            result.changed.append((since.old(inode).entry(path), inode.entry(path)))


def _second(item: tuple[Inode, str]) -> str:
    return item[1]


def _differs(a: Inode, b: Inode, *, same_chain: bool) -> bool:
    """Whether two states of a path differ in anything but a directory's times."""
    if (a.kind, a.mode, a.uid, a.gid, a.target, a.rdev, a.fileattr) != (
        b.kind, b.mode, b.uid, b.gid, b.target, b.rdev, b.fileattr,
    ):  # fmt: skip
        return True
    if (a.xattrs or {}) != (b.xattrs or {}):
        return True
    if a.kind == "dir":
        return False
    if a.size != b.size or a.mtime != b.mtime:
        return True
    return same_chain and a.pieces != b.pieces


def _by_path(since: Mark, tree: Tree) -> Changes:
    """Across a full backup: paths matched by name, files by their metadata."""
    result = Changes()
    before = dict(_walk(since.root, since))
    for path, inode in _walk(tree.root, None):
        then = before.pop(path, None)
        if then is None:
            result.added.append(inode.entry(path))
        elif then.kind != inode.kind:
            result.deleted.append(then.entry(path))
            result.added.append(inode.entry(path))
        elif _differs(then, inode, same_chain=False):
            result.changed.append((then.entry(path), inode.entry(path)))
    result.deleted.extend(inode.entry(path) for path, inode in before.items())
    return result


def _walk(top: Inode, since: Mark | None) -> Iterator[tuple[str, Inode]]:
    """Every path of a whole tree and its inode, in the old view when ``since`` is given."""
    stack = [("", since.old(top) if since else top)]
    while stack:
        path, inode = stack.pop()
        yield path, inode
        if inode.children:
            prefix = f"{path}/" if path else ""
            for name, child in inode.children.items():
                stack.append((prefix + name, since.old(child) if since else child))

"""A source's backups replayed day by day: what ``find`` and ``diff`` read.

Each chain is replayed from its full backup on; a backup without a file index (made before
btrsendd kept them, or whose index could not be read) hides its day and every later day of
its chain, since an incremental only means something on top of its parent.  The next full
backup sees again.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from btrsendd.errors import UsageError
from btrsendd.fileindex.diff import Changes, changes
from btrsendd.fileindex.entries import Entry
from btrsendd.fileindex.inodes import Mark
from btrsendd.fileindex.records import FileIndexError, Index
from btrsendd.fileindex.tree import Tree
from btrsendd.model import Backup

#: A backup's file index, or None when it has none.
Loader = Callable[[Backup], Index | None]


@dataclass
class Day:
    """One backup as the replay saw it: ``tree`` is its day (valid until the next one is
    asked for), or None and ``unseen`` says why."""

    backup: Backup
    tree: Tree | None
    #: The day before in the same tree, for ``changes``; None after a fresh start.
    before: Mark | None = None
    unseen: str | None = None

    def changes(self) -> Changes | None:
        if self.tree is None or self.before is None:
            return None
        return changes(self.tree, self.before)


def replay(backups: Sequence[Backup], load: Loader) -> Iterator[Day]:
    """Each of ``backups`` (one source's, oldest first) as the replay sees it."""
    tree = Tree()
    last: Backup | None = None  # the backup the tree holds, None when it holds none
    blind: Backup | None = None  # the backup that could not be replayed, since last is None
    for backup in backups:
        if backup.kind != "full" and (last is None or backup.parent_id != last.id):
            cause = f"{blind.id} ({blind.date})" if blind else f"its parent {backup.parent_id}"
            unseen = f"it is an incremental on {cause}, which could not be replayed"
            last = None
            yield Day(backup, None, unseen=unseen)
            continue
        try:
            index = load(backup)
            if index is None:
                raise FileIndexError("it has no file index (made before btrsendd kept them)")
            before = tree.mark() if last is not None else None
            try:
                tree.apply(backup.id, index)
            except FileIndexError:
                if before is not None:
                    before.release()
                raise
        except FileIndexError as exc:
            last, blind = None, backup
            yield Day(backup, None, unseen=str(exc))
            continue
        last, blind = backup, None
        yield Day(backup, tree, before)
        if before is not None:
            before.release()


def chain_to(backups: Sequence[Backup], wanted: Backup) -> list[Backup]:
    """The members of ``wanted``'s chain up to it, full first."""
    return [b for b in backups if b.chain == wanted.chain and b.date <= wanted.date]


def between(backups: Sequence[Backup], first: Backup, second: Backup, load: Loader) -> Changes:
    """What changed from backup ``first`` to backup ``second`` (not older than it)."""
    tree = Tree()
    mark: Mark | None = None
    members = chain_to(backups, second)
    if first.chain != second.chain:
        members = chain_to(backups, first) + members
    for day in replay(members, load):
        if day.tree is None:
            raise FileIndexError(f"cannot see into backup {day.backup.id}: {day.unseen}")
        if day.backup.id == first.id:
            tree = day.tree
            mark = tree.mark()
        if day.backup.id == second.id:
            tree = day.tree
            break
    assert mark is not None
    try:
        return changes(tree, mark)
    finally:
        mark.release()


def matcher(pattern: str) -> Callable[[str], bool]:
    """``find``'s test of a path: a pattern without '/' matches the base name (as ``find
    -name``), one with '/' the whole path from the subvolume's root (a leading '/' is
    allowed); shell wildcards, where '*' also matches '/'."""
    if not pattern or pattern.strip("/") == "":
        raise UsageError("the pattern is empty; give a name like '*.odt' or a path like 'docs/*'")
    if "/" not in pattern:
        return lambda path: fnmatch.fnmatchcase(path.rpartition("/")[2], pattern)
    whole = pattern.lstrip("/")
    return lambda path: fnmatch.fnmatchcase(path, whole)


class Matches:
    """The entries of one day that match, kept up to date from day to day by its changes
    (so a day costs what changed on it, not the whole tree)."""

    def __init__(self, match: Callable[[str], bool]) -> None:
        self._match = match
        self.entries: dict[str, Entry] = {}

    def update(self, day: Day) -> None:
        assert day.tree is not None
        found = day.changes()
        if found is None:
            self.entries = {}
            self._add(day.tree.entries())
            return
        for entry in found.deleted:
            self.entries.pop(entry.path, None)
        for before, after in found.renamed:
            self.entries.pop(before.path, None)
            if after.kind == "dir":
                prefix = before.path + "/"
                for path in [p for p in self.entries if p.startswith(prefix)]:
                    del self.entries[path]
        for entry in found.added:
            self._add([entry])
        for _, after in found.changed:
            self._add([after])
        for _, after in found.renamed:
            self._add(day.tree.entries(after.path) if after.kind == "dir" else [after])

    def _add(self, entries: Iterator[Entry] | list[Entry]) -> None:
        for entry in entries:
            if entry.path and self._match(entry.path):
                self.entries[entry.path] = entry

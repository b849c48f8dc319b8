"""The replay of a source's backups: which days it sees into, and why not the others."""

from __future__ import annotations

import datetime as dt

import pytest

from btrsendd.fileindex import records as r
from btrsendd.fileindex.history import Matches, between, matcher, replay
from btrsendd.fileindex.records import FileIndexError, Header, Index
from btrsendd.model import Backup


def row(n: int, kind: str, parent: int | None, chain: int) -> Backup:
    return Backup(
        id=f"b{n}", source="s", date=dt.date(2026, 1, 1 + n), kind=kind,  # type: ignore[arg-type]
        parent_id=None if parent is None else f"b{parent}", parent_date=None, chain=f"b{chain}",
        state="complete", snapshot=None, snapshot_uuid=None, parent_uuid=None,
        compression="zstd", recipients=(), storage_class="STANDARD", raw_bytes=0,
        stored_bytes=0, volume_count=1, created_at="", completed_at=None,
    )  # fmt: skip


BACKUPS = [row(0, "full", None, 0), row(1, "incremental", 0, 0), row(2, "full", None, 2),
           row(3, "incremental", 2, 2), row(4, "incremental", 9, 2)]  # fmt: skip
INDEXES = {
    "b2": Index(Header(1, "d2", "u2", None), (r.Mkfile("a.txt"), r.Mkfile("b.txt")), 0),
    "b3": Index(Header(1, "d3", "u3", "u2"), (r.Rename("a.txt", "c.txt"),), 0),
}


def load(backup: Backup) -> Index | None:
    return INDEXES.get(backup.id)


def test_days_without_an_index_and_those_after_them_are_unseen() -> None:
    seen = []
    for day in replay(BACKUPS, load):
        changes = day.changes()
        seen.append(
            (day.backup.id, day.unseen, changes and [(a.path, b.path) for a, b in changes.renamed])
        )
    assert seen == [
        ("b0", "it has no file index (made before btrsendd kept them)", None),
        ("b1", "it is an incremental on b0 (2026-01-01), which could not be replayed", None),
        ("b2", None, None),
        ("b3", None, [("a.txt", "c.txt")]),
        ("b4", "it is an incremental on its parent b9, which could not be replayed", None),
    ]


def test_find_keeps_its_matches_from_day_to_day() -> None:
    matches = Matches(matcher("*.txt"))
    found = []
    for day in replay(BACKUPS[2:4], load):
        matches.update(day)
        found.append(sorted(matches.entries))
    assert found == [["a.txt", "b.txt"], ["b.txt", "c.txt"]]


def test_diff_refuses_a_day_it_cannot_see_into() -> None:
    with pytest.raises(FileIndexError, match="cannot see into backup b0: it has no file index"):
        between(BACKUPS, BACKUPS[0], BACKUPS[3], load)
    changes = between(BACKUPS, BACKUPS[2], BACKUPS[3], load)
    assert [(a.path, b.path) for a, b in changes.renamed] == [("a.txt", "c.txt")]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [("*.txt", "a/b.txt", True), ("b*", "a/b.txt", True), ("a/*", "a/b/c", True),
     ("/a/*.txt", "a/b.txt", True), ("a/*.txt", "x/a/b.txt", False), ("a", "b/a", True)],
)  # fmt: skip
def test_patterns(pattern: str, path: str, matches: bool) -> None:
    assert matcher(pattern)(path) is matches


def test_across_a_new_full_backup_paths_are_compared_by_name_and_metadata() -> None:
    full = Index(
        Header(1, "d5", "u5", None),
        (r.Mkfile("b.txt"), r.Mkfile("c.txt"), r.Write("c.txt", 0, 3, 7), r.Mkfile("d.txt")),
        0,
    )
    backups = [*BACKUPS[2:4], row(5, "full", None, 5)]
    indexes = {**INDEXES, "b5": full}

    def load(backup: Backup) -> Index | None:
        return indexes.get(backup.id)

    changes = between(backups, backups[1], backups[2], load)
    assert [e.path for e in changes.added] == ["d.txt"]
    assert [(a.path, b.path) for a, b in changes.changed] == [("c.txt", "c.txt")]  # its size
    assert not changes.deleted and not changes.renamed
    matches = Matches(matcher("*.txt"))
    for day in replay(backups, load):
        matches.update(day)
    assert sorted(matches.entries) == ["b.txt", "c.txt", "d.txt"]

"""The replay against the truth: a chain of real btrfs snapshots (``support/filechain.py``),
sent and indexed as a backup does, replayed day by day and compared with each snapshot: paths,
kinds, modes, owners, times, sizes, symlink targets, devices, xattrs, hard links and every
file's bytes, reassembled from the raw streams; and the diff between days against the
snapshots' own differences."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from btrsendd.fileindex.diff import Changes
from btrsendd.fileindex.history import Matches, between, matcher, replay
from btrsendd.fileindex.records import Index
from btrsendd.model import Backup
from tests.fixtures.btrfs import loop_btrfs
from tests.support.filechain import (
    ChainDay,
    changed_paths,
    contents,
    expected_changes,
    hardlink_groups,
    make_chain,
    seen_in_tree,
    snapshot_state,
    without_ino,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["v1", "v2"])
def chain(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[list[ChainDay]]:
    """The chain sent as btrsendd sends it (protocol 1), and with protocol 2 (fallocate for
    holes and preallocation, larger writes)."""
    work = tmp_path_factory.mktemp("filechain")
    send_args = ("--proto", "2") if request.param == "v2" else ()
    with loop_btrfs(work, size="1G") as mnt:
        yield make_chain(mnt, work, send_args=send_args)


def backups_of(chain: list[ChainDay]) -> list[Backup]:
    """Catalog rows for the chain (what ``replay`` reads of them: ids, kinds, parents)."""
    rows = []
    for n, day in enumerate(chain):
        rows.append(
            Backup(
                id=day.backup_id,
                source="s",
                date=dt.date(2026, 1, 1 + n),
                kind="full" if n == 0 else "incremental",
                parent_id=chain[n - 1].backup_id if n else None,
                parent_date=None,
                chain=chain[0].backup_id,
                state="complete",
                snapshot=None,
                snapshot_uuid=None,
                parent_uuid=None,
                compression="zstd",
                recipients=(),
                storage_class="STANDARD",
                raw_bytes=0,
                stored_bytes=0,
                volume_count=1,
                created_at="",
                completed_at=None,
            )
        )
    return rows


def loader(chain: list[ChainDay]) -> dict[str, Index]:
    return {day.backup_id: day.index for day in chain}


def test_each_day_replays_to_its_snapshot(chain: list[ChainDay]) -> None:
    indexes = loader(chain)
    streams = {day.backup_id: day.stream for day in chain}
    days = replay(backups_of(chain), lambda b: indexes[b.id])
    for truth_day, day in zip(chain, days, strict=True):
        assert day.tree is not None, day.unseen
        entries = {e.path: e for e in day.tree.entries()}
        truth = snapshot_state(truth_day.snapshot)
        assert sorted(entries) == sorted(truth), truth_day.backup_id
        for path, entry in entries.items():
            assert without_ino(seen_in_tree(entry)) == without_ino(truth[path]), (
                truth_day.backup_id, path)  # fmt: skip
            if entry.kind == "file":
                real = (truth_day.snapshot / path).read_bytes()
                assert contents(entry, streams) == real, (truth_day.backup_id, path)
        assert hardlink_groups({p: e.inode for p, e in entries.items()}) == hardlink_groups(
            {p: s.ino for p, s in truth.items()}
        )


def summary(found: Changes) -> dict[str, set[object]]:
    return {
        "added": {e.path for e in found.added},
        "deleted": {e.path for e in found.deleted},
        "renamed": {(a.path, b.path) for a, b in found.renamed},
    }


def test_the_diff_of_each_day_is_the_snapshots_difference(chain: list[ChainDay]) -> None:
    indexes = loader(chain)
    states = [snapshot_state(day.snapshot) for day in chain]
    # Lazily: a day's tree and changes hold until the next day is asked for.
    for n, day in enumerate(replay(backups_of(chain), lambda b: indexes[b.id])):
        found = day.changes()
        if n == 0:
            assert found is None
            continue
        assert found is not None
        expected = expected_changes(states[n - 1], states[n])
        assert summary(found) == expected, chain[n].backup_id
        changed = changed_paths(states[n - 1], states[n], chain[n - 1].snapshot, chain[n].snapshot)
        assert {b.path for _, b in found.changed} == changed, chain[n].backup_id


def test_diff_across_several_days(chain: list[ChainDay]) -> None:
    indexes = loader(chain)
    rows = backups_of(chain)
    found = between(rows, rows[0], rows[-1], lambda b: indexes[b.id])
    old, new = snapshot_state(chain[0].snapshot), snapshot_state(chain[-1].snapshot)
    expected = expected_changes(old, new)
    assert summary(found) == expected
    changed = changed_paths(old, new, chain[0].snapshot, chain[-1].snapshot)
    assert {b.path for _, b in found.changed} == changed


@pytest.mark.parametrize("pattern", ["*.txt", "deep*", "docs/*", "/a/c/*", "renamed-dir/*"])
def test_find_follows_each_day(chain: list[ChainDay], pattern: str) -> None:
    indexes = loader(chain)
    match = matcher(pattern)
    matches = Matches(match)
    for truth_day, day in zip(chain, replay(backups_of(chain), lambda b: indexes[b.id]),
                              strict=True):  # fmt: skip
        matches.update(day)
        truth = snapshot_state(truth_day.snapshot)
        expected = {p: (s.size, s.mtime_ns) for p, s in truth.items() if p and match(p)}
        assert {p: (e.size, e.mtime_ns) for p, e in matches.entries.items()} == expected

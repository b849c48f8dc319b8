"""Interrupted uploads resume at the first missing volume, and only when that is provably safe."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.backups import events
from tests.support.faults import faulty_zstd, kill_all, start
from tests.support.indexes import fresh_index, stored_index
from tests.support.trees import assert_same_tree, populate
from tests.support.world import World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source, big=5 * 1024**2)  # about 8 volumes of 1 MiB
    return w


def archive_volumes(world: World) -> list[str]:
    return sorted(p.name for p in (world.work / "archive").rglob("vol-*"))


def test_failed_upload_resumes_from_first_missing_volume(
    world: World, make_btrfs: MakeBtrfs
) -> None:
    faulty_zstd(world, nth=4, action="echo 'zstd: simulated crash' >&2; exit 1")
    failed = world.run("backup", "--date", "2000-01-01", check=False)
    assert failed.returncode == 1
    [partial] = world.list()
    assert partial["state"] == "uploading" and partial["volumes"] == 3
    assert len(archive_volumes(world)) == 3

    world.env.pop("PATH")
    resumed = world.run("backup", "--date", "2000-01-01")
    [event] = events(resumed, "backup.resumed")
    assert event["volumes_skipped"] == 3 and event["bytes_saved"] == 3 * 1024**2
    [done] = world.list()
    assert done["state"] == "complete" and done["id"] == partial["id"]
    assert done["volumes"] >= 8

    target = make_btrfs("dst")
    world.restore(date(2000, 1, 1), target)
    assert_same_tree(world.snapshots / "2000-01-01", target / "2000-01-01")


def test_a_resumed_upload_indexes_the_whole_stream(world: World) -> None:
    """The skipped volumes' bytes are replayed to be hashed: they are indexed too, so the
    index is the same as if nothing had been interrupted."""
    faulty_zstd(world, nth=4, action="echo 'zstd: simulated crash' >&2; exit 1")
    assert world.run("backup", "--date", "2000-01-01", check=False).returncode == 1
    world.env.pop("PATH")
    resumed = world.run("backup", "--date", "2000-01-01")
    assert events(resumed, "backup.resumed")[0]["volumes_skipped"] == 3
    [done] = world.list()
    resumed_index = stored_index(world, done["id"])
    assert resumed_index == fresh_index(world.snapshots / "2000-01-01")
    assert resumed_index.stream_size == done["raw_bytes"]


def test_kill_9_mid_upload_then_resume(world: World, make_btrfs: MakeBtrfs) -> None:
    counter = faulty_zstd(world, nth=3, action="sleep 600")
    # Its own process group: the kill takes btrsendd with every child (the hanging zstd's
    # sleep included), as a power cut would, and no process of anyone else's.
    proc = start(world, "backup", "--date", "2000-01-01", stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (counter.exists() and counter.read_text().strip() == "3"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    kill_all(proc)
    assert [b["state"] for b in world.list()] == ["uploading"]

    world.env.pop("PATH")
    resumed = world.run("backup", "--date", "2000-01-01")
    assert events(resumed, "backup.resumed")[0]["volumes_skipped"] == 2
    target = make_btrfs("dst")
    world.restore(date(2000, 1, 1), target)
    assert_same_tree(world.snapshots / "2000-01-01", target / "2000-01-01")


def test_changed_snapshot_discards_partial_backup(world: World) -> None:
    faulty_zstd(world, nth=3, action="exit 1")
    world.run("backup", "--date", "2000-01-01", check=False)
    [partial] = world.list()
    # Replace the snapshot with a different one under the same name: the replayed stream
    # can no longer match, so resuming would store a corrupt backup.
    snap = world.snapshots / "2000-01-01"
    subprocess.run(["btrfs", "subvolume", "delete", str(snap)], check=True, capture_output=True)
    (world.source / "new.txt").write_text("changed")
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(world.source), str(snap)],
        check=True,
        capture_output=True,
    )
    world.env.pop("PATH")
    again = world.run("backup", "--date", "2000-01-01")
    assert events(again, "backup.discarded")
    [fresh] = world.list()
    assert fresh["id"] != partial["id"] and fresh["state"] == "complete"
    assert date.fromisoformat(fresh["date"]) == date(2000, 1, 1)


def test_stream_that_differs_from_stored_volumes_is_not_resumed(world: World) -> None:
    faulty_zstd(world, nth=3, action="exit 1")
    world.run("backup", "--date", "2000-01-01", check=False)
    [partial] = world.list()
    # Same snapshot, but a recorded volume hash that the replayed stream cannot match (as if
    # btrfs send had produced different bytes): the partial backup must not be completed.
    db = sqlite3.connect(world.work / "state" / "catalog.db")
    with db:
        db.execute("UPDATE volumes SET raw_sha256 = ? WHERE idx = 1", ("0" * 64,))
    db.close()
    world.env.pop("PATH")
    again = world.run("backup", "--date", "2000-01-01")
    [discarded] = events(again, "backup.discarded")
    assert "differs from stored volume 1" in str(discarded["reason"])
    [fresh] = world.list()
    assert fresh["id"] != partial["id"] and fresh["state"] == "complete"

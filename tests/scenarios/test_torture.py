"""Kill torture: SIGKILL at twenty points of a backup's life, and the next cycle puts it right.

On real btrfs with SeaweedFS, a source is backed up for twenty days: a full backup on odd days,
an incremental on even days, and from day 4 on the expiry of the oldest chain before each
incremental (one incremental per chain, chains expire after two days).  Each day's first run is
killed, with its whole process group as a power cut would, at a chosen point of its life:
during ``btrfs send``, between volumes, in the middle of a multipart upload, after the last
volume but before the manifest, in the middle of an expiry; and at the nastier moments when the
server has done something but btrsendd never heard of it (a part, a volume, a manifest stored,
an upload opened, objects deleted).

Each point is reached deterministically: the fault proxy holds the chosen request (before the
server sees it, or after the server did it but before the answer leaves), or a faulty zstd hangs
at the chosen volume; only then is btrsendd killed.

Right after every kill, whatever the catalog calls complete is stored whole.  After the next
cycle: the day's backup is complete, resumed from the first volume not recorded (the volumes it
skipped were not uploaded again), an interrupted expiry is finished, the catalog matches the
bucket exactly (no orphans, no open multipart upload), and the newest backup of every chain
restores to its snapshot.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.faultproxy import FaultProxy, Stage
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.support.backups import events
from tests.support.consistency import (
    assert_catalog_matches_bucket,
    assert_complete_backups_are_stored,
    restore_and_compare,
)
from tests.support.faults import PASS_THEN_HANG, change_source, faulty_zstd, kill_all, start
from tests.support.trees import populate
from tests.support.world import World, make_world

MiB = 1024**2
VOLUME = 6 * MiB  # two parts of 5 MiB and 1 MiB: every volume but the last is a multipart upload
DAILY = 7 * MiB  # new data per day: an incremental spans two volumes, a full three or four


@dataclass
class Rig:
    world: World
    proxy: FaultProxy
    server: S3Server
    bucket: str


@dataclass(frozen=True)
class Trigger:
    """How to tell that a killed run reached its point, and what to undo after the kill."""

    reached: Callable[[], bool]
    release: Callable[[], None]


@dataclass(frozen=True)
class Point:
    """Where day ``day``'s first run is killed, and what the next run must then do."""

    day: int
    where: str
    arm: Callable[[Rig], Trigger]
    #: How many volumes the next run skips, given the backup's volume count; None when the
    #: kill leaves no upload to resume.
    skipped: Callable[[int], int] | None
    #: Whether the kill interrupts an expiry (its backups are then left "expiring").
    expiring: bool = False


def held(match: Callable[[Request], bool], stage: Stage = "request") -> Callable[[Rig], Trigger]:
    """Kill while the proxy holds the first request that ``match``es (see ``Hold``)."""

    def arm(rig: Rig) -> Trigger:
        hold = rig.proxy.hold(match, stage)
        return Trigger(hold.arrived.is_set, hold.release)

    return arm


def zstd_stuck(
    nth: int, action: str = "sleep 600", settle: float = 0.0
) -> Callable[[Rig], Trigger]:
    """Kill once zstd started for the ``nth`` time (volume ``nth - 1``) and ran ``action``."""

    def arm(rig: Rig) -> Trigger:
        counter = faulty_zstd(rig.world, nth, action)
        started: list[float] = []

        def reached() -> bool:
            if not started and counter.exists() and counter.read_text().strip() == str(nth):
                started.append(time.monotonic())
            return bool(started) and time.monotonic() - started[0] >= settle

        return Trigger(reached, lambda: None)

    return arm


def vol(index: int) -> str:
    return f"/vol-{index:05d}.btrfs.zst.gpg"


def op(operation: str, key_end: str = "", part: int | None = None) -> Callable[[Request], bool]:
    return lambda r: (
        r.operation == operation
        and r.key.endswith(key_end)
        and (part is None or r.query["partNumber"] == [str(part)])
    )


def part(volume: int, number: int) -> Callable[[Request], bool]:
    return op("UploadPart", vol(volume), number)


def opened(volume: int) -> Callable[[Request], bool]:
    return op("CreateMultipartUpload", vol(volume))


def completed(volume: int) -> Callable[[Request], bool]:
    return op("CompleteMultipartUpload", vol(volume))


def nth(match: Callable[[Request], bool], n: int) -> Callable[[Request], bool]:
    """The ``n``th request (1-based) that ``match``es."""
    seen = itertools.count(1)
    return lambda r: match(r) and next(seen) == n


def first(count: int) -> Callable[[int], int]:
    """The next run skips the first ``count`` volumes, whatever the backup's size."""
    return lambda volumes: count


def every(volumes: int) -> int:
    return volumes


def all_but_last(volumes: int) -> int:
    return volumes - 1


MANIFEST = op("PutObject", "/manifest.json")
DELETE = op("DeleteObjects")
LOST = "response"  # hold after the server did the work: its answer never arrives
MID_VOLUME = PASS_THEN_HANG.format(size=MiB)  # zstd encodes 1 MiB of the volume, then hangs

POINTS = [
    Point(1, "sending, before the first volume", zstd_stuck(1), first(0)),
    Point(2, "between volumes 0 and 1", zstd_stuck(2), first(1)),
    Point(3, "mid multipart upload (volume 1, part 2)", held(part(1, 2)), first(1)),
    Point(4, "expiry: deleting the manifests", held(DELETE), None, expiring=True),
    Point(5, "after the last volume, before the manifest", held(MANIFEST), every),
    Point(6, "expiry: deleting a backup's volumes", held(nth(DELETE, 2)), None, expiring=True),
    Point(7, "volume 1 stored, answer lost", held(completed(1), LOST), first(1)),
    Point(8, "expiry: manifests deleted, answer lost", held(DELETE, LOST), None, expiring=True),
    Point(9, "sending, mid volume 2", zstd_stuck(3, MID_VOLUME, 0.5), first(2)),
    Point(10, "expiry: listing a backup", held(op("ListObjectsV2")), None, expiring=True),
    Point(11, "manifest stored, answer lost", held(MANIFEST, LOST), every),
    Point(12, "expiry: all deleted, answer lost", held(nth(DELETE, 3), LOST), None, expiring=True),
    Point(13, "volume 0 part 1 stored, answer lost", held(part(0, 1), LOST), first(0)),
    Point(14, "after the expiry, before the first volume", zstd_stuck(1), first(0)),
    Point(15, "opening volume 1's upload", held(opened(1)), first(1)),
    Point(16, "upload of volume 0 opened, answer lost", held(opened(0), LOST), first(0)),
    Point(17, "between volumes 1 and 2", zstd_stuck(3), first(2)),
    Point(18, "expiry: deleting the last volumes", held(nth(DELETE, 3)), None, expiring=True),
    Point(19, "last volume stored, answer lost", held(op("PutObject", ".gpg"), LOST), all_but_last),
    Point(20, "incremental: before its manifest", held(MANIFEST), every),
]  # fmt: skip


@pytest.fixture
def rig(
    make_btrfs: MakeBtrfs,
    gpg_key: GpgKey,
    tmp_path: Path,
    fault_proxy: FaultProxy,
    seaweedfs_server: S3Server,
) -> Rig:
    bucket = seaweedfs_server.new_bucket()
    storage = (
        f'backend = "s3"\nbucket = "{bucket}"\nendpoint_url = "{fault_proxy.endpoint_url}"\n'
        'storage_class = "STANDARD"'
    )
    world = make_world(make_btrfs("src"), tmp_path, gpg_key, storage)
    world.pipeline = 'compression = "zstd"\nvolume_size = "6MiB"\npart_size = "5MiB"'
    world.schedule = (
        f"backup_days = {list(range(1, 32))}\nmax_incrementals = 1\nchain_lifetime_days = 2"
    )
    populate(world.source, big=10 * MiB)
    return Rig(world, fault_proxy, seaweedfs_server, bucket)


@pytest.fixture
def target(make_btrfs: MakeBtrfs) -> Path:
    return make_btrfs("dst")


def killed_run(rig: Rig, point: Point, day: str) -> None:
    """Start the day's backup, wait for ``point``, kill everything, undo the trigger."""
    trigger = point.arm(rig)
    log = rig.world.work / f"killed-{day}.log"
    with log.open("wb") as stderr:
        proc = start(rig.world, "backup", "--date", day, stderr=stderr)
    rig.world.env.pop("PATH", None)  # the faulty zstd is for this run only
    try:
        deadline = time.monotonic() + 60
        while not trigger.reached():
            assert proc.poll() is None, f"btrsendd exited before the kill:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"kill point never reached:\n{log.read_text()}"
            time.sleep(0.02)
    finally:
        kill_all(proc)
        trigger.release()


def newest_of_each_chain(backups: list[dict[str, object]]) -> Iterator[str]:
    newest: dict[object, str] = {}
    for backup in backups:  # oldest first
        newest[backup["chain"]] = str(backup["date"])
    return iter(sorted(newest.values()))


@pytest.mark.slow
def test_every_kill_is_repaired_by_the_next_cycle(rig: Rig, target: Path) -> None:
    world, client = rig.world, rig.server.client()
    resumed_with_savings = 0
    for point in POINTS:
        day = date(2000, 1, point.day).isoformat()
        if point.day > 1:
            change_source(world, point.day, DAILY)
        try:
            killed_run(rig, point, day)
            backups, _ = assert_complete_backups_are_stored(world, client, rig.bucket)
            assert point.expiring == any(b["state"] == "expiring" for b in backups), backups

            mark = len(rig.proxy.exchanges)
            after = world.run("backup", "--date", day)
            backups = assert_catalog_matches_bucket(world, client, rig.bucket)
            today = backups[-1]
            assert today["date"] == day
            resumed = events(after, "backup.resumed")
            if point.skipped is None:
                assert resumed == []
            else:
                [event] = resumed
                skipped = point.skipped(today["volumes"])
                assert event["volumes_skipped"] == skipped
                saved = today["raw_bytes"] if skipped == today["volumes"] else skipped * VOLUME
                assert event["bytes_saved"] == saved
                if skipped:
                    # The skipped volumes were not sent again: fewer bytes than the backup's.
                    assert rig.proxy.uploaded(since=mark) < today["stored_bytes"]
                    resumed_with_savings += 1
            for newest in newest_of_each_chain(backups):
                restore_and_compare(world, target, newest)
        except AssertionError as exc:
            exc.add_note(f"kill point: day {point.day}: {point.where}")
            raise
    assert resumed_with_savings >= 10  # ten of the points stop after volumes were stored

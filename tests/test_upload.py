"""No stream that ``btrfs receive`` could not restore is ever stored as a complete backup.

Through the real CLI, on real btrfs, gpg, the local backend and a real S3 server: every kind of
broken input to ``backup-stdin`` fails with exit 1 and one error line, leaves nothing in
``list`` and nothing in the archive, and changes nothing for the days already backed up or
for the next good backup.  ``backup`` records what each stream says it is, and each
incremental's stream must continue its parent's.
"""

from __future__ import annotations

import gzip
import random
import re
import sqlite3
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import btrfsutil
import pytest

from btrsendd.catalog import Catalog
from btrsendd.manifest import Manifest
from btrsendd.model import StreamIdentity
from btrsendd.pipeline.sendstream import COMMAND_HEADER, uuid_text
from tests.cli.helpers import one_error_line
from tests.fixtures.btrfs import MakeBtrfs
from tests.support import sendstreams as ss
from tests.support.backups import OnBackend, events, world_storage
from tests.support.faults import faulty_zstd
from tests.support.trees import assert_same_tree, mutate, populate
from tests.support.world import World

MiB = 1 << 20
DAY1, DAY2, DAY3, DAY4 = date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14), date(2000, 1, 21)


def send(*args: Path | str) -> bytes:
    argv = ["btrfs", "-q", "send", *map(str, args)]
    return subprocess.run(argv, check=True, capture_output=True).stdout


def snapshot(source: Path, path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    btrfsutil.create_snapshot(source, path, read_only=True)
    return path


def leftovers(world: World, request: pytest.FixtureRequest) -> list[str]:
    """Every object in the archive, by any name (temporary files and open multipart uploads
    included): what a failed backup must not add to."""
    if 'backend = "local"' in world.storage:
        root = world.work / "archive"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    bucket = re.search(r'bucket = "([^"]+)"', world.storage)
    assert bucket is not None
    client = request.getfixturevalue("seaweedfs_server").client()
    uploads = client.list_multipart_uploads(Bucket=bucket.group(1)).get("Uploads", [])
    return sorted(o.key for o in world_storage(world).list("")) + [
        f"upload {u['Key']}" for u in uploads
    ]


def backup_stdin(world: World, day: date, stream: bytes) -> subprocess.CompletedProcess[bytes]:
    return world.run("backup-stdin", "--source", "data", "--date", day.isoformat(),
                     input=stream, check=False)  # fmt: skip


def cut_in_a_payload(stream: bytes, after: int) -> int:
    """An offset inside the payload of the first command that ends after ``after``."""
    pos, length, _, _ = next(c for c in ss.commands(stream) if c[0] + c[1] > after)
    assert length > 100
    return pos + COMMAND_HEADER + length // 2


def broken_streams(world: World, good: bytes) -> dict[str, tuple[bytes, str]]:
    """What backup-stdin is fed instead of ``good`` (an incremental of the day on DAY2), and
    what the error line must say."""
    flipped = bytearray(good)
    flip_at = cut_in_a_payload(good, int(1.5 * MiB))
    flipped[flip_at] ^= 0x04
    mid_payload = cut_in_a_payload(good, int(1.2 * MiB))
    day1, day2 = world.snapshots / DAY1.isoformat(), world.snapshots / DAY2.isoformat()
    day3 = world.root / "manual" / DAY3.isoformat()
    other = snapshot(world.source, world.root / "manual" / "other")
    odd = snapshot(world.source, world.root / "manual" / "my snapshot")
    return {
        "cut in the stream header": (good[:9], "ends in its header at byte 9 (truncated?)"),
        "cut in a command header": (good[:21], "in the middle of a command at byte 21"),
        "cut in a payload, after a stored volume": (
            good[:mid_payload],
            f"in the middle of a command at byte {mid_payload} (truncated?)",
        ),
        "cut at a volume boundary": (good[:MiB], f"at byte {MiB}"),
        "cut just before END": (good[:-COMMAND_HEADER], "without its END command (truncated?)"),
        "random bytes": (random.Random(7).randbytes(3 * MiB), "not a btrfs send stream"),
        "a gzip file": (gzip.compress(good), "gzip-compressed data: decompress it first"),
        "empty input": (b"", "the send stream is empty"),
        "one flipped bit": (bytes(flipped), "the send stream is damaged: the checksum of its"),
        "garbage after END": (good + b"garbage", "goes on after its END command"),
        "relative to another snapshot": (
            send("-p", day1, day3),
            f"not to the backup of {DAY2}, which sent {uuid_text(uuid_of(day2))}",
        ),
        "a full stream instead": (send(day3), "but the send stream is a full one"),
        "two subvolumes in one stream": (
            send("-e", "-p", day2, day3, other),
            "the send stream holds more than one subvolume (another SNAPSHOT at byte",
        ),
        "a subvolume name restore could not use": (
            send("-p", day2, odd),
            "the send stream's subvolume is called 'my snapshot'",
        ),
        "two streams one after the other": (
            send("-p", day2, day3, other),
            "a second send stream begins after the END command",
        ),
    }


def uuid_of(path: Path) -> str:
    return bytes(btrfsutil.subvolume_info(path).uuid).hex()


@pytest.mark.parametrize("backend", ["local", "seaweedfs"])
def test_backup_stdin_stores_no_broken_stream(
    backend: str, on_backend: OnBackend, make_btrfs: MakeBtrfs, request: pytest.FixtureRequest
) -> None:
    world = on_backend(backend)
    world.schedule = "max_incrementals = 5"
    populate(world.source)
    world.run("backup", "--date", DAY1.isoformat())
    mutate(world.source, 1)
    world.run("backup", "--date", DAY2.isoformat())
    mutate(world.source, 2)
    day3 = snapshot(world.source, world.root / "manual" / DAY3.isoformat())
    good = send("-p", world.snapshots / DAY2.isoformat(), day3)
    assert len(good) > 2 * MiB, "the incremental should span volumes (volume_size is 1 MiB)"
    before, stored_before = world.list(), leftovers(world, request)

    for case, (stream, says) in broken_streams(world, good).items():
        proc = backup_stdin(world, DAY3, stream)
        assert proc.returncode == 1, case
        assert proc.stdout == f"i {DAY2}\n".encode(), case
        line = one_error_line(proc.stderr)
        assert says in line, f"{case}: {line}"
        assert world.list() == before, case
        assert leftovers(world, request) == stored_before, case

    target = make_btrfs("dst")
    for day in (DAY1, DAY2):
        assert_same_tree(world.snapshots / day.isoformat(), world.restore(day, target))
    proc = backup_stdin(world, DAY3, good)
    assert proc.returncode == 0, proc.stderr.decode()
    latest = world.list()[-1]
    assert (latest["date"], latest["kind"], latest["parent"], latest["state"]) == (
        DAY3.isoformat(), "incremental", DAY2.isoformat(), "complete",
    )  # fmt: skip
    assert_same_tree(day3, world.restore(DAY3, target))


def rows(world: World) -> list[Any]:
    with Catalog.open(world.work / "state") as catalog:
        return catalog.backups("data")


def set_stream(world: World, day: date, values: str) -> None:
    """Rewrite a backup's recorded stream identity, as no btrsendd command would."""
    db = sqlite3.connect(world.work / "state" / "catalog.db")
    with db:
        db.execute(f"UPDATE backups SET {values} WHERE date = ?", (day.isoformat(),))
    db.close()


LEGACY = (
    "stream_version = NULL, stream_name = NULL, stream_uuid = NULL, stream_ctransid = NULL, "
    "stream_parent_uuid = NULL, stream_parent_ctransid = NULL"
)


def test_backup_records_what_each_stream_is_and_checks_each_link(on_backend: OnBackend) -> None:
    world = on_backend("local")
    world.schedule = "max_incrementals = 5"
    populate(world.source)
    for n, day in enumerate((DAY1, DAY2, DAY3)):
        if n:
            mutate(world.source, n)
        world.run("backup", "--date", day.isoformat())
    recorded = rows(world)
    storage = world_storage(world)
    for n, row in enumerate(recorded):
        info = btrfsutil.subvolume_info(world.snapshots / row.snapshot)
        parent = None if n == 0 else recorded[n - 1].stream
        assert row.stream == StreamIdentity(
            1,
            row.snapshot,
            bytes(info.uuid).hex(),
            info.ctransid,
            None if parent is None else parent.uuid,
            None if parent is None else parent.ctransid,
        )
        assert parent is None or row.stream.continues(parent)
        manifest = storage.get_bytes(f"data/{row.id}/manifest.json")
        assert Manifest.from_json(manifest, "manifest").backup.stream == row.stream

    # The parent's recorded stream no longer matches the snapshot the incremental is sent
    # from (only a damaged or hand-edited catalog does that): the backup fails, stores nothing.
    set_stream(world, DAY3, "stream_ctransid = stream_ctransid + 1")
    mutate(world.source, 3)
    before = world.list()
    proc = world.run("backup", "--date", DAY4.isoformat(), check=False)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert f"not to the backup of {DAY3}, which sent" in line
    assert world.list() == before
    assert not list((world.work / "archive" / "data").glob(f"{DAY4}-*"))
    set_stream(world, DAY3, "stream_ctransid = stream_ctransid - 1")
    world.run("backup", "--date", DAY4.isoformat())
    assert [b["date"] for b in world.list()] == [d.isoformat() for d in (DAY1, DAY2, DAY3, DAY4)]


def test_backups_recorded_before_streams_were_checked(on_backend: OnBackend) -> None:
    """A parent without a stream identity: its snapshot's UUID stands in where it is known,
    and where nothing is known the link is accepted and the log says it was not checked."""
    world = on_backend("local")
    populate(world.source)
    world.run("backup", "--date", DAY1.isoformat())
    set_stream(world, DAY1, LEGACY)
    mutate(world.source, 1)
    day2 = snapshot(world.source, world.root / "manual" / DAY2.isoformat())
    other = snapshot(world.source, world.root / "manual" / "other")
    proc = backup_stdin(world, DAY2, send("-p", other, day2))
    assert proc.returncode == 1
    assert f"not to the backup of {DAY1}'s snapshot" in one_error_line(proc.stderr)
    proc = backup_stdin(world, DAY2, send("-p", world.snapshots / DAY1.isoformat(), day2))
    assert proc.returncode == 0 and not events(proc, "backup.link_unchecked")
    assert rows(world)[1].stream.parent_uuid == rows(world)[0].snapshot_uuid

    # A backup-stdin parent from before: no identity, no snapshot, nothing to compare.
    set_stream(world, DAY2, LEGACY)
    mutate(world.source, 2)
    day3 = snapshot(world.source, world.root / "manual" / DAY3.isoformat())
    proc = backup_stdin(world, DAY3, send("-p", day2, day3))
    assert proc.returncode == 0
    [unchecked] = events(proc, "backup.link_unchecked")
    assert unchecked["parent"] == DAY2.isoformat()


def test_a_resumed_backup_checks_the_whole_stream(on_backend: OnBackend) -> None:
    world = on_backend("local")
    populate(world.source, big=3 * MiB)
    faulty_zstd(world, nth=3, action="echo 'zstd: simulated crash' >&2; exit 1")
    assert world.run("backup", "--date", DAY1.isoformat(), check=False).returncode == 1
    [partial] = rows_in(world, "uploading")
    assert partial.stream is None and partial.volume_count == 2
    world.env.pop("PATH")
    resumed = world.run("backup", "--date", DAY1.isoformat())
    assert events(resumed, "backup.resumed")
    # The identity comes from the stream's first command, in the volumes that were skipped:
    # the replayed stream was checked from its first byte.
    [done] = rows(world)
    assert done.id == partial.id
    assert done.stream is not None and done.stream.uuid == partial.snapshot_uuid


def test_a_resume_whose_replayed_stream_fails_its_check_starts_afresh(
    on_backend: OnBackend,
) -> None:
    world = on_backend("local")
    populate(world.source, big=3 * MiB)
    world.run("backup", "--date", DAY1.isoformat())
    mutate(world.source, 1)
    faulty_zstd(world, nth=2, action="exit 1")
    assert world.run("backup", "--date", DAY2.isoformat(), check=False).returncode == 1
    [partial] = rows_in(world, "uploading")
    assert partial.volume_count == 1
    world.env.pop("PATH")
    # Its parent's recorded stream now names another subvolume: the replayed incremental
    # cannot continue it, so the stored volume is worthless, and so is a fresh attempt.
    set_stream(world, DAY1, "stream_uuid = '" + "ab" * 16 + "'")
    proc = world.run("backup", "--date", DAY2.isoformat(), check=False)
    [discarded] = events(proc, "backup.discarded")
    assert "the replayed send stream fails its check" in discarded["reason"]
    assert proc.returncode == 1
    assert "not to the backup of 2000-01-01" in one_error_line(proc.stderr)
    assert [r.date for r in rows_in(world, "complete", "uploading")] == [DAY1]
    assert not list((world.work / "archive" / "data").glob(f"{partial.id}*"))


def rows_in(world: World, *states: Any) -> list[Any]:
    with Catalog.open(world.work / "state") as catalog:
        return catalog.backups("data", states=states)

"""A world backing up to a SeaweedFS bucket with Object Lock, for the lock scenarios.

Backups are dated in the past (``--date`` after tomorrow is refused), so a lock is never
shorter than today plus the margin however old the backup's date is.  Every day of the month
is a backup day, so each ``--date`` is due.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from btrsendd.layout import MANIFEST_NAME
from btrsendd.restore import POLL_SECONDS_ENV
from btrsendd.storage.s3.client import CHECKSUM_PREFIX
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support.lockbucket import (
    Stored,
    VersionedBucket,
    backup_dir,
    by_chain,
    lock_floor,
    lock_storage,
)
from tests.support.trees import assert_same_tree, mutate, populate
from tests.support.world import World, make_world

#: The file index of every backup in these worlds (zstd, encrypted).
INDEX = "file-index.zst.gpg"
EVERY_DAY = "backup_days = [" + ", ".join(str(d) for d in range(1, 32)) + "]"


#: The lock tests' defaults: chains of two backups, lock margin 2 days.
MARGIN = 2


def ago(days: int) -> date:
    return date.today() - timedelta(days=days)


@dataclass
class LockWorld:
    world: World
    bucket: VersionedBucket
    lifetime: int
    margin: int
    days: int = 0  # backups made so far (the source changes before each but the first)

    def back_up(self, day: date) -> subprocess.CompletedProcess[bytes]:
        if self.days:
            mutate(self.world.source, self.days)
        self.days += 1
        return self.world.run("backup", "--date", day.isoformat())

    def locks(self, backup: dict[str, Any]) -> dict[Stored, tuple[str, datetime]]:
        """Mode and retain-until of every version of one backup, which must hold exactly one
        version of each of its keys (the manifest, the file index and every volume) and no
        delete marker."""
        found = self.bucket.everything(backup_dir(backup))
        assert not [v for v in found if v.marker], found
        names = sorted(v.key.rpartition("/")[2] for v in found)
        volumes = [n for n in names if n.startswith("vol-")]
        assert len(set(volumes)) == len(volumes) == backup["volumes"], names
        assert names == sorted([MANIFEST_NAME, INDEX, *volumes]), names
        return {v: self.bucket.retention(v) for v in found}


#: ``lock_world("governance", lifetime=30)``: a world on a fresh SeaweedFS bucket.
LockWorlds = Callable[..., LockWorld]


def make_lock_world(
    seaweedfs_server: S3Server, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> LockWorlds:
    """What the ``lock_world`` fixture (``tests/scenarios/conftest.py``) gives."""

    def make(
        object_lock: str, *, lifetime: int, lock: bool = True, margin: int = MARGIN
    ) -> LockWorld:
        bucket = seaweedfs_server.new_bucket(lock=lock, versioned=True)
        work = tmp_path / "work"
        work.mkdir()
        storage = lock_storage(seaweedfs_server, object_lock, bucket=bucket, margin=margin)
        w = make_world(make_btrfs("src"), work, gpg_key, storage)
        w.schedule = f"{EVERY_DAY}\nmax_incrementals = 1\nchain_lifetime_days = {lifetime}"
        w.env[POLL_SECONDS_ENV] = "0.05"
        populate(w.source)
        return LockWorld(w, VersionedBucket(seaweedfs_server.client(), bucket), lifetime, margin)

    return make


def back_up_checking_locks(lw: LockWorld, mode: str) -> list[dict[str, Any]]:
    """Two chains of two backups (the last one today); after each, every version of every
    kept backup is locked in ``mode`` until its chain can expire plus the margin, and a
    chain that grew had the locks of its older members extended (the same versions: a lock
    is extended, never rewritten).  Returns ``list --json``."""
    before: dict[Stored, tuple[str, datetime]] = {}
    for day in (ago(6), ago(4), ago(2), ago(0)):
        lw.back_up(day)
        kept = lw.world.list()
        now: dict[Stored, tuple[str, datetime]] = {}
        for newest, members in by_chain(kept):
            floor = lock_floor(newest, lw.lifetime, lw.margin)
            for b in members:
                for v, (got_mode, until) in lw.locks(b).items():
                    assert got_mode == mode.upper(), (v, got_mode)
                    assert until >= floor, (v, until, floor)
                    # Compliance locks cannot be undone: one much longer than needed costs
                    # money for nothing.
                    assert until < floor + timedelta(days=2), (v, until, floor)
                    now[v] = (got_mode, until)
        assert set(before) <= set(now), "a kept backup lost a version, or it was rewritten"
        grown = kept[-1]
        if grown["kind"] == "incremental":
            members = [b for b in kept[:-1] if b["chain"] == grown["chain"]]
            older = [v for v in before for b in members if v.key.startswith(backup_dir(b))]
            assert older
            for v in older:
                assert now[v][1] > before[v][1], f"{v.key}: lock not extended as its chain grew"
        before = now
    return kept


def overwrite(bucket: VersionedBucket, key: str, size: int) -> tuple[bytes, str]:
    """A garbage version of ``key`` as long as the genuine one, uploaded like btrsendd
    uploads volumes (multipart, SHA-256 checksums): only its checksum tells it apart.
    Returns the garbage and the checksum a manifest would record for it."""
    data = secrets.token_bytes(size)
    c, name = bucket.client, bucket.name
    upload = c.create_multipart_upload(Bucket=name, Key=key, ChecksumAlgorithm="SHA256")
    part = c.upload_part(
        Bucket=name,
        Key=key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=data,
        ChecksumAlgorithm="SHA256",
    )
    done = c.complete_multipart_upload(
        Bucket=name,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}
            ]
        },
    )
    head = c.head_object(Bucket=name, Key=key, VersionId=done["VersionId"], ChecksumMode="ENABLED")
    return data, CHECKSUM_PREFIX + head["ChecksumSHA256"]


def restore_and_compare(world: World, original: World, day: date, target: Path) -> None:
    """Restore ``day`` with ``world``, compare it with ``original``'s snapshot, remove it."""
    restored = world.restore(day, target)
    assert_same_tree(original.snapshots / day.isoformat(), restored)
    subprocess.run(["btrfs", "subvolume", "delete", str(restored)], check=True, capture_output=True)

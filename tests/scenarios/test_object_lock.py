"""Immutable backups: with S3 Object Lock, the host's own credentials cannot destroy history.

On SeaweedFS, which enforces Object Lock (a locked version refuses deletion, a compliance
retention cannot be shortened, multipart uploads are locked too), unlike moto.  Backups are
dated in the past (``--date`` after tomorrow is refused), so a lock is never shorter than today
plus the margin however old the backup's date is.  Every day of the month is a backup day, so
each ``--date`` is due.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from btrsendd.layout import MANIFEST_NAME, new_backup_id
from btrsendd.restore import POLL_SECONDS_ENV
from btrsendd.storage.s3.client import CHECKSUM_PREFIX
from tests.cli.helpers import one_error_line
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.support.backups import events
from tests.support.faults import faulty_zstd
from tests.support.lockbucket import (
    PREFIX,
    Stored,
    VersionedBucket,
    backup_dir,
    by_chain,
    lock_floor,
    lock_storage,
)
from tests.support.trees import assert_same_tree, mutate, populate
from tests.support.world import World, make_world

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
        version of each of its keys (the manifest and every volume) and no delete marker."""
        found = self.bucket.everything(backup_dir(backup))
        assert not [v for v in found if v.marker], found
        names = sorted(v.key.rpartition("/")[2] for v in found)
        volumes = [n for n in names if n.startswith("vol-")]
        assert len(set(volumes)) == len(volumes) == backup["volumes"], names
        assert names == sorted([MANIFEST_NAME, *volumes]), names
        return {v: self.bucket.retention(v) for v in found}


#: ``lock_world("governance", lifetime=30)``: a world on a fresh SeaweedFS bucket.
LockWorlds = Callable[..., LockWorld]


@pytest.fixture
def lock_world(
    seaweedfs_server: S3Server, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> LockWorlds:
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


def strings(value: Any) -> list[str]:
    """Every string in a JSON document, for loose checks of a report whose shape may grow."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_every_object_is_locked_until_its_chain_can_expire(
    lock_world: LockWorlds, mode: str
) -> None:
    lw = lock_world(mode, lifetime=30)
    kept = back_up_checking_locks(lw, mode)
    assert [b["kind"] for b in kept] == ["full", "incremental", "full", "incremental"]

    # status names the mode and, for the source, until when its oldest backup is locked
    # (loosely: where the report says it is not settled yet).
    report = json.loads(lw.world.run("status", "--json").stdout)
    assert mode in [s.lower() for s in strings(report)]
    oldest_lock = min(until for _, until in lw.locks(kept[0]).values())
    [source] = report["sources"]
    assert any(s.startswith(oldest_lock.date().isoformat()) for s in strings(source)), source


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


def genuine_manifest(bucket: VersionedBucket, backup: dict[str, Any]) -> dict[str, Any]:
    [v] = [v for v in bucket.versions(backup_dir(backup)) if v.key.endswith(MANIFEST_NAME)]
    doc: dict[str, Any] = json.loads(bucket.read(v))
    return doc


def intrude(bucket: VersionedBucket, kept: list[dict[str, Any]]) -> str:
    """Everything the host's own credentials allow against a compliance-locked archive.

    Deletes every version (refused), shortens every lock (refused), suspends versioning
    (refused); then hides every key behind delete markers, overwrites it with garbage,
    plants newer manifests that would be adopted if a rebuild trusted the newest version
    (one describing another backup, the others pointing at the garbage), plants a backup of
    its own whose volumes are garbage, and finally hides every key again.  Returns the id
    of the planted backup.
    """
    c, name = bucket.client, bucket.name
    genuine = {b["id"]: genuine_manifest(bucket, b) for b in kept}
    written = bucket.versions(f"{PREFIX}/")
    soon = datetime.now(UTC) + timedelta(minutes=1)
    for v in written:
        at = {"Key": v.key, "VersionId": v.version_id}
        bucket.refuses("delete_object", **at)
        bucket.refuses("delete_object", **at, BypassGovernanceRetention=True)
        for mode in ("COMPLIANCE", "GOVERNANCE"):
            retention = {"Mode": mode, "RetainUntilDate": soon}
            bucket.refuses("put_object_retention", **at, Retention=retention)
            bucket.refuses(
                "put_object_retention", **at, Retention=retention, BypassGovernanceRetention=True
            )
    bucket.refuses("put_bucket_versioning", VersioningConfiguration={"Status": "Suspended"})
    assert c.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"

    keys = sorted({v.key for v in written})
    for key in keys:
        c.delete_object(Bucket=name, Key=key)
    forged_sums: dict[str, tuple[str, str]] = {}
    for v in written:
        data, checksum = overwrite(bucket, v.key, v.size)
        forged_sums[v.key] = (hashlib.sha256(data).hexdigest(), checksum)

    first, second = kept[0], kept[1]
    manifests: dict[str, bytes] = {
        first["id"]: json.dumps(genuine[second["id"]]).encode()  # another backup's manifest
    }
    for b in kept[1:]:
        doc = genuine[b["id"]]
        for vol in doc["volumes"]:
            vol["stored_sha256"], vol["stored_checksum"] = forged_sums[backup_dir(b) + vol["name"]]
        manifests[b["id"]] = json.dumps(doc).encode()
    for b in kept:
        c.put_object(Bucket=name, Key=backup_dir(b) + MANIFEST_NAME, Body=manifests[b["id"]])

    # A backup of its own, on a day without one, as a copy of a genuine full backup: its
    # volumes are as long as the manifest says but garbage.
    day = date.fromisoformat(second["date"]) - timedelta(days=1)
    planted = {**genuine[first["id"]], "id": new_backup_id(day, "full"), "date": day.isoformat()}
    planted.update(chain=planted["id"], snapshot=day.isoformat())
    where = {**first, "id": planted["id"]}
    for vol in planted["volumes"]:
        overwrite(bucket, backup_dir(where) + vol["name"], vol["stored_size"])
    c.put_object(Bucket=name, Key=backup_dir(where) + MANIFEST_NAME, Body=json.dumps(planted))

    for key in keys:
        c.delete_object(Bucket=name, Key=key)
    return str(planted["id"])


#: A backup's manifest and its volumes' bytes, by name.
Copy = tuple[dict[str, Any], dict[str, bytes]]


def genuine_copy(bucket: VersionedBucket, genuine: dict[str, Any]) -> Copy:
    """``genuine``'s manifest and volume bytes, read while they are the only versions."""
    doc = genuine_manifest(bucket, genuine)
    stored = {v.key: v for v in bucket.versions(backup_dir(genuine))}
    data = {
        vol["name"]: bucket.read(stored[backup_dir(genuine) + vol["name"]])
        for vol in doc["volumes"]
    }
    return doc, data


def plant_twin(bucket: VersionedBucket, genuine: dict[str, Any], copy: Copy) -> str:
    """A perfect forgery of ``genuine``'s day: its volumes copied byte for byte under a new
    id, its manifest claiming to have been completed first.  Only the storage's own clock
    (the genuine manifest was stored first) tells them apart.  Returns the forgery's id."""
    c, name = bucket.client, bucket.name
    doc, data = copy
    day = date.fromisoformat(genuine["date"])
    early = "2000-01-01T00:00:00+00:00"
    twin = {**doc, "id": new_backup_id(day, doc["kind"]), "completed_at": early}
    if doc["kind"] == "full":
        twin["chain"] = twin["id"]
    where = {**genuine, "id": twin["id"]}
    for vol_name, body in data.items():
        checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
        c.put_object(
            Bucket=name,
            Key=backup_dir(where) + vol_name,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
    c.put_object(Bucket=name, Key=backup_dir(where) + MANIFEST_NAME, Body=json.dumps(twin))
    return str(twin["id"])


def restore_and_compare(world: World, original: World, day: date, target: Path) -> None:
    """Restore ``day`` with ``world``, compare it with ``original``'s snapshot, remove it."""
    restored = world.restore(day, target)
    assert_same_tree(original.snapshots / day.isoformat(), restored)
    subprocess.run(["btrfs", "subvolume", "delete", str(restored)], check=True, capture_output=True)


def summary(world: World) -> list[tuple[Any, ...]]:
    keys = ("id", "date", "kind", "parent_id", "chain", "volumes", "stored_bytes", "state")
    return [tuple(b[k] for k in keys) for b in world.list()]


def test_intruder_with_the_hosts_credentials_destroys_and_plants_nothing(
    lock_world: LockWorlds, make_btrfs: MakeBtrfs, tmp_path: Path
) -> None:
    lw = lock_world("compliance", lifetime=30)
    kept = back_up_checking_locks(lw, "compliance")
    before = summary(lw.world)
    copy = genuine_copy(lw.bucket, kept[-1])
    planted = intrude(lw.bucket, kept)
    twin = plant_twin(lw.bucket, kept[-1], copy)

    # This machine's catalog names the versions it wrote: the newest day (a whole chain)
    # comes back as it was, whatever the current version of each key is.
    target = make_btrfs("dst")
    restore_and_compare(lw.world, lw.world, ago(0), target)

    # A new machine (a new state directory, the same configuration) sees the genuine
    # backups only, behind every delete marker and garbage version.
    work = tmp_path / "new-machine"
    work.mkdir()
    fresh = replace(lw.world, work=work)
    rebuilt = fresh.run("catalog", "rebuild", check=False)
    err = rebuilt.stderr.decode()
    assert rebuilt.returncode == 1, err  # the planted backup is skipped, and said so
    assert "Traceback" not in err and planted in err and twin in err, err
    assert summary(fresh) == before

    for b in kept:
        restore_and_compare(fresh, lw.world, date.fromisoformat(b["date"]), target)


def test_expiry_on_a_versioned_bucket_leaves_no_version_behind(lock_world: LockWorlds) -> None:
    lw = lock_world("off", lifetime=3, lock=False)
    for day in (ago(40), ago(39), ago(38)):
        lw.back_up(day)
    chain = lw.world.list()[:2]
    # What retried uploads and deletes without a version id leave: a noncurrent version of
    # a volume, and a delete marker hiding a manifest.
    c, name = lw.bucket.client, lw.bucket.name
    volume = next(v.key for v in lw.bucket.versions(backup_dir(chain[0])) if "/vol-" in v.key)
    c.put_object(Bucket=name, Key=volume, Body=b"x")
    c.delete_object(Bucket=name, Key=backup_dir(chain[1]) + MANIFEST_NAME)
    others = {v for v in lw.bucket.everything(f"{PREFIX}/") if chain[0]["id"] not in v.key}
    others = {v for v in others if chain[1]["id"] not in v.key}

    proc = lw.back_up(ago(36))  # the chain of ago(40) and ago(39) is 3 days old: it goes
    assert events(proc, "chain.expired")
    assert [b["date"] for b in lw.world.list()] == [ago(38).isoformat(), ago(36).isoformat()]
    for b in chain:
        assert lw.bucket.everything(backup_dir(b)) == [], b["id"]
    assert others <= set(lw.bucket.everything(f"{PREFIX}/")), "a kept backup lost a version"


def test_expiry_and_forget_of_locked_backups_wait_for_the_lock_to_end(
    lock_world: LockWorlds,
) -> None:
    lw = lock_world("governance", lifetime=3, margin=1)
    for day in (ago(40), ago(39), ago(38)):
        lw.back_up(day)
    chain = lw.world.list()[:2]
    locked = {v: lw.bucket.retention(v)[1] for b in chain for v in lw.locks(b)}

    # The chain of ago(40) and ago(39) may expire on ago(36), but is locked until tomorrow
    # at least: reported, gone from `list`, every version still there.
    proc = lw.back_up(ago(36))
    [report] = events(proc, "expiry.locked")
    assert report["level"] == "warning"
    assert str(report["until"])[:10] in {until.date().isoformat() for until in locked.values()}
    assert [b["date"] for b in lw.world.list()] == [ago(38).isoformat(), ago(36).isoformat()]
    for b in chain:
        assert set(lw.bucket.everything(backup_dir(b))) == {v for v in locked if b["id"] in v.key}

    # forget of a locked backup says until when it is locked, and it is gone from `list`.
    newest = lw.world.list()[-1]
    newest_locks = {v: lw.bucket.retention(v)[1] for v in lw.locks(newest)}
    forgot = lw.world.run(
        "forget", "--source", "data", "--date", newest["date"], "--yes", check=False
    )
    said = forgot.stdout.decode() + forgot.stderr.decode()
    assert forgot.returncode == 0, said
    assert any(until.date().isoformat() in said for until in newest_locks.values()), said
    assert [b["date"] for b in lw.world.list()] == [ago(38).isoformat()]
    assert set(lw.bucket.everything(backup_dir(newest))) == set(newest_locks)

    # Once the locks end (shortened here with the governance bypass btrsendd never uses),
    # the next cycle finishes both deletions: not one version or delete marker is left.
    soon = datetime.now(UTC) + timedelta(seconds=3)
    for v in [*locked, *newest_locks]:
        lw.bucket.client.put_object_retention(
            Bucket=lw.bucket.name,
            Key=v.key,
            VersionId=v.version_id,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon},
            BypassGovernanceRetention=True,
        )
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 1.5)
    lw.back_up(ago(35))
    for b in [*chain, newest]:
        assert lw.bucket.everything(backup_dir(b)) == [], b["id"]
    assert [b["date"] for b in lw.world.list()] == [ago(38).isoformat(), ago(35).isoformat()]


def test_locks_outlive_turning_object_lock_off(lock_world: LockWorlds) -> None:
    """An admin who turns object_lock off does not turn the locks off: expiry of what was
    locked still waits for them instead of failing every cycle on refused deletions."""
    lw = lock_world("governance", lifetime=3, margin=1)
    for day in (ago(40), ago(39), ago(38)):
        lw.back_up(day)
    chain = lw.world.list()[:2]
    lw.world.storage = lw.world.storage.replace('object_lock = "governance"', 'object_lock = "off"')
    lw.world.write_config()
    proc = lw.back_up(ago(36))
    [report] = events(proc, "expiry.locked")
    assert report["backups"] == [b["id"] for b in chain]
    assert [b["date"] for b in lw.world.list()] == [ago(38).isoformat(), ago(36).isoformat()]
    lw.back_up(ago(35))  # and the next cycle, still waiting, succeeds as well


def test_check_config_wants_a_bucket_with_object_lock(
    seaweedfs_server: S3Server, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    plain, versioned = seaweedfs_server.new_bucket(), seaweedfs_server.new_bucket(versioned=True)
    world = make_world(make_btrfs("src"), tmp_path, gpg_key, "")
    for bucket in (plain, versioned):
        world.storage = lock_storage(seaweedfs_server, "compliance", bucket=bucket, margin=None)
        world.write_config()
        proc = world.run("check-config", check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "Traceback" not in err, err
        lines = err.splitlines()
        assert any(
            "Object Lock" in line and "--object-lock-enabled-for-bucket" in line for line in lines
        ), err

    locked = seaweedfs_server.new_bucket(lock=True)
    world.storage = lock_storage(seaweedfs_server, "governance", bucket=locked, margin=1)
    world.write_config()
    world.run("check-config")

    # Only S3 has Object Lock: asking for it elsewhere is a configuration error.
    world.storage = f'backend = "local"\npath = "{tmp_path / "a"}"\nobject_lock = "governance"'
    world.write_config()
    proc = world.run("check-config", check=False)
    assert proc.returncode == 2
    assert "object_lock" in one_error_line(proc.stderr)


# -- faults and mistakes around locks (adversarial review) -------------------------------


def lift_locks(bucket: VersionedBucket, versions: list[Stored]) -> None:
    """End the governance locks of ``versions`` within seconds (with the bypass btrsendd
    never has), and wait until they have ended."""
    soon = datetime.now(UTC) + timedelta(seconds=3)
    for v in versions:
        if v.marker:
            continue
        bucket.client.put_object_retention(
            Bucket=bucket.name,
            Key=v.key,
            VersionId=v.version_id,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon},
            BypassGovernanceRetention=True,
        )
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 1.5)


def test_a_deferred_deletion_cut_short_is_finished(lock_world: LockWorlds) -> None:
    """A cycle killed in the middle of deleting a deferred batch (its manifests gone, its
    volumes not yet) leaves versions in the catalog that no longer exist: the next cycle
    finishes the batch instead of failing on them, every cycle, forever."""
    lw = lock_world("governance", lifetime=3, margin=1)
    for day in (ago(40), ago(39), ago(38)):
        lw.back_up(day)
    chain = lw.world.list()[:2]
    assert events(lw.back_up(ago(36)), "expiry.locked")
    waiting = [v for b in chain for v in lw.bucket.everything(backup_dir(b))]
    lift_locks(lw.bucket, waiting)
    # What `finish_deferred` had done when the kill came: the manifests are deleted.
    manifests = [v for v in waiting if v.key.endswith(MANIFEST_NAME)]
    for v in manifests:
        lw.bucket.client.delete_object(Bucket=lw.bucket.name, Key=v.key, VersionId=v.version_id)

    proc = lw.back_up(ago(35))
    assert proc.returncode == 0
    for b in chain:
        assert lw.bucket.everything(backup_dir(b)) == [], b["id"]


def test_an_upload_resumed_after_its_lock_date_is_locked_anew(lock_world: LockWorlds) -> None:
    """An upload interrupted, then resumed after the lock it began with has ended (a laptop
    off for longer than chain_lifetime_days + margin): S3 refuses a retain-until in the
    past, so resuming with the old date would fail every cycle, forever."""
    lw = lock_world("governance", lifetime=3, margin=1)
    lw.back_up(ago(2))
    faulty_zstd(lw.world, nth=2, action="exit 1")  # the second volume fails: one is stored
    mutate(lw.world.source, 1)
    lw.world.run("backup", "--date", ago(1).isoformat(), check=False)
    lw.world.env.pop("PATH")
    partial = lw.world.list()[-1]
    assert (partial["state"], partial["volumes"]) == ("uploading", 1)
    # Time passes, as far as the lock the backup began with is concerned.
    with sqlite3.connect(lw.world.work / "state" / "catalog.db") as db:
        db.execute(
            "UPDATE backups SET locked_until = ? WHERE id = ?",
            ((datetime.now(UTC) - timedelta(days=1)).isoformat(), partial["id"]),
        )

    proc = lw.world.run("backup", "--date", ago(1).isoformat())
    assert events(proc, "backup.resumed")
    kept = lw.world.list()
    assert [b["state"] for b in kept] == ["complete", "complete"]
    floor = lock_floor(ago(1), lw.lifetime, lw.margin)
    # The whole chain, the volume stored before the interruption too, is locked anew.
    for b in kept:
        for v, (_, until) in lw.locks(b).items():
            assert until >= floor, (v, until, floor)


def test_a_new_host_without_object_lock_waits_for_the_locks_it_finds(
    lock_world: LockWorlds, tmp_path: Path
) -> None:
    """A catalog rebuilt on a new host whose configuration leaves object_lock "off" (the
    default) knows of no lock; the bucket still has them.  Expiry of a locked chain must
    wait for them, not fail every cycle on refused deletions (no backup would be made again).
    """
    lw = lock_world("governance", lifetime=3, margin=1)
    for day in (ago(40), ago(39), ago(38)):
        lw.back_up(day)
    chain = lw.world.list()[:2]
    work = tmp_path / "new-host"
    work.mkdir()
    fresh = replace(
        lw.world,
        work=work,
        storage=lw.world.storage.replace('object_lock = "governance"', 'object_lock = "off"'),
    )
    fresh.write_config()
    fresh.run("catalog", "rebuild")
    first = fresh.run("backup", "--date", ago(36).isoformat(), check=False)
    assert first.returncode == 0, first.stderr.decode()
    [report] = events(first, "expiry.locked")
    assert report["backups"] == [b["id"] for b in chain]
    fresh.run("backup", "--date", ago(35).isoformat())  # and the next cycle, still waiting
    assert not {b["id"] for b in chain} & {b["id"] for b in fresh.list()}
    for b in chain:
        assert lw.bucket.versions(backup_dir(b)), "a locked version went"


def denied_by_an_older_policy(request: Request) -> bool:
    """What the IAM policy the README gave before versions were supported does not allow:
    s3:GetBucketVersioning, s3:ListBucketVersions, s3:GetObjectVersion (a GET or HEAD of a
    version by id), s3:DeleteObjectVersion, and everything about Object Lock."""
    q = request.query
    return bool(
        {"versioning", "versions", "object-lock", "retention"} & set(q)
        or ("versionId" in q and request.method in ("GET", "HEAD", "DELETE"))
    )


def test_a_versioned_bucket_with_an_older_policy_works_as_before(
    seaweedfs_server: S3Server,
    fault_proxy: FaultProxy,
    make_btrfs: MakeBtrfs,
    gpg_key: GpgKey,
    tmp_path: Path,
) -> None:
    """Users who turned versioning on with the policy of an older btrsendd: backup,
    verify, restore and expiry keep working (a warning asks for the new permissions)."""
    bucket = seaweedfs_server.new_bucket(versioned=True)
    fault_proxy.inject(1.0, seed=1, limit=10**6, kinds=("403",), match=denied_by_an_older_policy)
    storage = lock_storage(seaweedfs_server, "off", bucket=bucket, margin=None)
    storage = storage.replace(seaweedfs_server.endpoint_url, fault_proxy.endpoint_url)
    (tmp_path / "work").mkdir()
    w = make_world(make_btrfs("src"), tmp_path / "work", gpg_key, storage)
    w.schedule = f"{EVERY_DAY}\nmax_incrementals = 1\nchain_lifetime_days = 3"
    populate(w.source)
    for i, day in enumerate((ago(40), ago(39), ago(38), ago(36))):
        if i:
            mutate(w.source, i)
        w.run("backup", "--date", day.isoformat())
    assert [b["date"] for b in w.list()] == [ago(38).isoformat(), ago(36).isoformat()]
    w.run("verify")
    restore_and_compare(w, w, ago(36), make_btrfs("dst"))

    # The policy is brought up to date; then someone writes over a volume of a backup that
    # recorded no versions.  `verify --clean` reports the damage, and must not delete the
    # genuine version, now noncurrent: it is the only good copy left.
    fault_proxy.inject(0.0, seed=1, limit=0)
    versioned = VersionedBucket(seaweedfs_server.client(), bucket)
    newest = w.list()[-1]
    genuine = [v for v in versioned.versions(backup_dir(newest)) if "/vol-" in v.key]
    overwrite(versioned, genuine[0].key, genuine[0].size)
    proc = w.run("verify", "--clean", check=False)
    assert proc.returncode == 1, proc.stderr.decode()
    assert set(genuine) <= set(versioned.versions(backup_dir(newest)))

"""Object Lock under faults and mistakes: a chain whose older members cannot be locked longer
gets no new member; a deferred deletion cut short, an upload resumed after its lock date, a
new host configured without object_lock, and a versioned bucket under an older IAM policy all
keep working (SeaweedFS, behind the fault proxy where the storage must refuse)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from btrsendd.layout import MANIFEST_NAME
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.support.backups import error_lines, events
from tests.support.faults import faulty_zstd
from tests.support.impatient import impatient_s3
from tests.support.lockbucket import (
    PREFIX,
    Stored,
    VersionedBucket,
    backup_dir,
    lock_floor,
    lock_storage,
)
from tests.support.lockworld import (
    EVERY_DAY,
    LockWorlds,
    ago,
    overwrite,
    restore_and_compare,
)
from tests.support.trees import mutate, populate
from tests.support.world import make_world


def _retention_request(request: Request) -> bool:
    return request.method == "PUT" and "retention" in request.target.partition("?")[2]


def test_a_chain_that_cannot_be_locked_longer_gets_no_new_member(
    seaweedfs_server: S3Server,
    fault_proxy: FaultProxy,
    make_btrfs: MakeBtrfs,
    gpg_key: GpgKey,
    tmp_path: Path,
) -> None:
    bucket = seaweedfs_server.new_bucket(lock=True, versioned=True)
    storage = lock_storage(seaweedfs_server, "governance", bucket=bucket, margin=1)
    storage = storage.replace(seaweedfs_server.endpoint_url, fault_proxy.endpoint_url)
    world = make_world(make_btrfs("src"), tmp_path, gpg_key, storage)
    world.schedule = f"{EVERY_DAY}\nmax_incrementals = 3\nchain_lifetime_days = 30"
    impatient_s3(world, budget=1.5, timeout=2.0)
    populate(world.source)
    world.run("backup", "--date", ago(2).isoformat())
    [full] = world.list()
    store = VersionedBucket(seaweedfs_server.client(), bucket)
    before = {v: store.retention(v) for v in store.versions(backup_dir(full))}

    # Every retention request fails for longer than the retry budget.
    fault_proxy.inject(1.0, seed=1, limit=10_000, kinds=("503",), match=_retention_request)
    mutate(world.source, 1)
    failed = world.run("backup", "--date", ago(1).isoformat(), check=False)
    assert failed.returncode == 1, failed.stderr.decode()
    [line] = error_lines(failed)
    assert "extending the retention of" in line, line
    assert "Traceback" not in failed.stderr.decode()
    assert world.list() == [full]  # nothing half made, nothing recorded
    assert set(store.everything(f"{PREFIX}/")) == set(before)

    # The storage answers again: the next backup extends the chain first, then joins it.
    fault_proxy.inject(0.0, seed=1, limit=0)
    world.run("backup", "--date", ago(0).isoformat())
    inc = world.list()[-1]
    assert inc["parent_id"] == full["id"]
    for v, (mode, until) in before.items():
        assert store.retention(v)[0] == mode and store.retention(v)[1] > until


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


def test_a_version_someone_else_locked_holds_back_only_itself(lock_world: LockWorlds) -> None:
    lw = lock_world("governance", lifetime=3, margin=1)
    for day in (ago(40), ago(39), ago(38)):
        lw.back_up(day)
    chain = lw.world.list()[:2]
    # Someone plants a version into the chain's directory and locks it for good.
    planted = backup_dir(chain[0]) + "planted"
    c, name = lw.bucket.client, lw.bucket.name
    c.put_object(
        Bucket=name,
        Key=planted,
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=2),
    )
    assert events(lw.back_up(ago(36)), "expiry.locked")  # the whole chain waits for now
    genuine = [v for b in chain for v in lw.bucket.everything(backup_dir(b)) if v.key != planted]
    lift_locks(lw.bucket, genuine)

    # The next cycle deletes all that no lock holds; the planted version alone waits.
    proc = lw.back_up(ago(35))
    [waiting] = events(proc, "expiry.waiting")
    assert waiting["locked"] == 1
    left = [v.key for b in chain for v in lw.bucket.everything(backup_dir(b))]
    assert left == [planted]
    [source] = json.loads(lw.world.run("status", "--json").stdout)["sources"]
    assert source["deferred_deletion"]["versions"] == 1


def test_a_chain_that_cannot_be_extended_does_not_stop_backups(lock_world: LockWorlds) -> None:
    lw = lock_world("governance", lifetime=30, margin=1)
    lw.back_up(ago(3))
    [old] = lw.world.list()
    # A volume of the kept chain is lost (deleted by someone allowed to), and its lock is due
    # to be extended.
    [volume] = [v for v in lw.bucket.versions(backup_dir(old)) if "/vol-00000" in v.key]
    lw.bucket.client.delete_object(
        Bucket=lw.bucket.name,
        Key=volume.key,
        VersionId=volume.version_id,
        BypassGovernanceRetention=True,
    )
    with sqlite3.connect(lw.world.work / "state" / "catalog.db") as db:
        db.execute(
            "UPDATE backups SET locked_until = ? WHERE id = ?",
            (datetime.now(UTC).isoformat(), old["id"]),
        )
    lw.world.schedule = lw.world.schedule.replace("max_incrementals = 1", "max_incrementals = 0")
    lw.world.write_config()
    proc = lw.back_up(ago(0))  # a full backup of a new chain: the old one is not its parent
    [warning] = events(proc, "lock.extend_failed")
    assert warning["chain"] == old["chain"] and "verify" in warning["detail"]
    assert [b["date"] for b in lw.world.list()] == [ago(3).isoformat(), ago(0).isoformat()]

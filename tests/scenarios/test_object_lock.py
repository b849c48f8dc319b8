"""Immutable backups: with S3 Object Lock, every object is locked until its chain can expire,
expiry and ``forget`` wait for the locks, and versioned buckets keep nothing of what expired.

On SeaweedFS, which enforces Object Lock (a locked version refuses deletion, a compliance
retention cannot be shortened, multipart uploads are locked too), unlike moto.  The world is
``tests/support/lockworld.py``'s; an intruder's attempts are ``test_object_lock_intruder.py``.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from btrsendd.layout import MANIFEST_NAME
from tests.cli.helpers import one_error_line
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support.backups import events
from tests.support.indexes import stored_index
from tests.support.lockbucket import (
    PREFIX,
    backup_dir,
    lock_storage,
)
from tests.support.lockworld import (
    INDEX,
    LockWorlds,
    ago,
    back_up_checking_locks,
    overwrite,
)
from tests.support.world import make_world


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


def test_verify_reports_versions_no_backup_owns_and_clean_deletes_the_unlocked(
    lock_world: LockWorlds,
) -> None:
    lw = lock_world("governance", lifetime=30)
    lw.back_up(ago(1))
    [backup] = lw.world.list()
    c, name = lw.bucket.client, lw.bucket.name
    volume = next(v.key for v in lw.bucket.versions(backup_dir(backup)) if "/vol-" in v.key)
    manifest = backup_dir(backup) + MANIFEST_NAME
    # Someone writes garbage over a volume, hides the manifest, leaves a stray object, and
    # locks a second stray version of their own (governance, as btrsendd would).
    c.put_object(Bucket=name, Key=volume, Body=b"garbage")
    c.delete_object(Bucket=name, Key=manifest)
    c.put_object(Bucket=name, Key=f"{PREFIX}/data/stray", Body=b"stray")
    c.put_object(
        Bucket=name,
        Key=f"{PREFIX}/data/locked",
        Body=b"locked",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )

    found = lw.world.run("verify", check=False)
    out = found.stdout.decode()
    assert found.returncode == 1, out
    assert "PROBLEM" not in out, out  # the recorded versions are intact
    orphans = [line for line in out.splitlines() if "ORPHAN" in line]
    assert len(orphans) == 4, out
    assert all(" version " in line for line in orphans), out
    assert sum("delete marker" in line for line in orphans) == 1, out

    # status counts what they cost (it cannot list the bucket itself).
    status = json.loads(lw.world.run("status", "--json").stdout)
    [source] = status["sources"]
    assert source["stray_versions"]["versions"] == 4
    assert status["storage"]["noncurrent_bytes"] == source["stray_versions"]["bytes"] > 0

    cleaned = lw.world.run("verify", "--clean", check=False)
    said = cleaned.stdout.decode()
    assert "deleted 3 version(s) no backup owns" in said, said
    assert "left 1 version(s) no backup owns that are still locked" in said, said
    left = {(v.key, v.marker) for v in lw.bucket.everything(f"{PREFIX}/")}
    assert (f"{PREFIX}/data/locked", False) in left
    assert not any(key == f"{PREFIX}/data/stray" or marker for key, marker in left), left
    # What is left of the backup is exactly what it wrote; only the locked stray remains.
    assert len(lw.locks(backup)) == 2 + backup["volumes"]  # the manifest, the file index
    again = lw.world.run("verify", check=False).stdout.decode()
    assert [line for line in again.splitlines() if "ORPHAN" in line] == [
        line for line in orphans if f"{PREFIX}/data/locked" in line
    ], again
    [source] = json.loads(lw.world.run("status", "--json").stdout)["sources"]
    assert source["stray_versions"] == {**source["stray_versions"], "versions": 1, "bytes": 6}


def test_the_file_index_is_locked_and_read_by_its_recorded_version(
    lock_world: LockWorlds,
) -> None:
    lw = lock_world("governance", lifetime=30)
    lw.back_up(ago(1))
    [backup] = lw.world.list()
    index = stored_index(lw.world, backup["id"])
    key = backup_dir(backup) + INDEX
    [(genuine, (mode, _))] = [(v, lock) for v, lock in lw.locks(backup).items() if v.key == key]
    assert mode == "GOVERNANCE"

    # Written over (same size), the index read is still the one stored, here and on a new
    # machine, which finds its version again; verify sees nothing wrong with the backup.
    overwrite(lw.bucket, key, genuine.size)
    assert stored_index(lw.world, backup["id"]) == index
    shutil.rmtree(lw.world.work / "state")
    lw.world.run("catalog", "rebuild")
    assert stored_index(lw.world, backup["id"]) == index
    checked = lw.world.run("verify", check=False).stdout.decode()
    assert "PROBLEM" not in checked and "ORPHAN" in checked, checked


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

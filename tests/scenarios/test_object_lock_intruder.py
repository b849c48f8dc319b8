"""An intruder with the host's own credentials against a bucket with Object Lock (compliance
mode, SeaweedFS): it can hide, overwrite and plant, but after it, the host restores its backups
and a new machine rebuilds exactly the genuine ones and restores every kept day.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from btrsendd.layout import MANIFEST_NAME, new_backup_id
from tests.fixtures.btrfs import MakeBtrfs
from tests.support.lockbucket import (
    PREFIX,
    VersionedBucket,
    backup_dir,
)
from tests.support.lockworld import (
    LockWorlds,
    ago,
    back_up_checking_locks,
    overwrite,
    restore_and_compare,
)
from tests.support.world import World


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

"""What must hold after any failure, once the next cycle has run: the checks the fault and
kill-torture tests share.

They look behind btrsendd's back, with a raw boto3 client straight to the server: the catalog
and the bucket agree (every complete backup's manifest and volumes are stored, at the sizes
recorded; nothing else is; no multipart upload is open), and backups restore to their
snapshots.
"""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.trees import assert_same_tree
from tests.support.world import World

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def bucket_objects(client: S3Client, bucket: str) -> dict[str, int]:
    """Every object in ``bucket``: key -> size."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}


def open_uploads(client: S3Client, bucket: str) -> list[str]:
    """Keys with a multipart upload still open (billed until aborted)."""
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def assert_complete_backups_are_stored(
    world: World, client: S3Client, bucket: str
) -> tuple[list[Any], dict[str, int]]:
    """Every backup the catalog calls complete has its manifest and every volume (and the
    file index) the manifest lists, at the recorded sizes: true at any moment, even right
    after a crash.

    Returns the catalog's backups (``list --json``) and the objects they account for.
    """
    backups = world.list()
    stored = bucket_objects(client, bucket)
    accounted: dict[str, int] = {}
    for backup in (b for b in backups if b["state"] == "complete"):
        directory = f"{backup['source']}/{backup['id']}"
        key = f"{directory}/manifest.json"
        assert key in stored, f"complete backup {backup['id']} has no manifest"
        manifest = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert (manifest["id"], len(manifest["volumes"])) == (backup["id"], backup["volumes"])
        assert manifest["stored_bytes"] == backup["stored_bytes"]
        accounted[key] = stored[key]
        for volume in [*manifest["volumes"], *filter(None, [manifest.get("file_index")])]:
            accounted[f"{directory}/{volume['name']}"] = volume["stored_size"]
    wrong = sorted(k for k in accounted if stored.get(k) != accounted[k])
    assert not wrong, f"volumes of complete backups missing or of the wrong size: {wrong}"
    return backups, accounted


def assert_catalog_matches_bucket(world: World, client: S3Client, bucket: str) -> list[Any]:
    """Every backup is complete and stored, nothing else is in the bucket, and no multipart
    upload is open: what the cycle after any failure must leave.  Returns the backups."""
    backups, accounted = assert_complete_backups_are_stored(world, client, bucket)
    assert all(b["state"] == "complete" for b in backups), backups
    orphans = sorted(set(bucket_objects(client, bucket)) - set(accounted))
    assert not orphans, f"objects outside every backup: {orphans}"
    assert open_uploads(client, bucket) == []
    return backups


def restore_and_compare(world: World, target: Path, day: date | str) -> None:
    """Restore the source as of ``day`` into ``target``, compare it with its snapshot, and
    delete it again (so the same day can be restored there later)."""
    day = str(day)
    world.restore(date.fromisoformat(day), target)
    assert_same_tree(world.snapshots / day, target / day)
    subprocess.run(
        ["btrfs", "subvolume", "delete", str(target / day)], check=True, capture_output=True
    )

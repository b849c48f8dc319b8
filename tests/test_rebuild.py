"""``catalog rebuild``: a new machine gets every restorable backup back from the manifests,
and nothing else, whatever else the bucket holds."""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from btrsendd.config import load_config
from btrsendd.manifest import MAX_MANIFEST_BYTES, shown
from btrsendd.model import FileIndexRef
from btrsendd.restore import POLL_SECONDS_ENV
from btrsendd.storage.vault import archives as vault
from btrsendd.strictjson import Invalid, Object
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import s3_client
from tests.fixtures.vaultserver import VaultServer
from tests.storage.helpers import glacier
from tests.support.backups import (
    TEN_DAYS,
    OnBackend,
    back_up,
    backup_prefix,
    error_lines,
    events,
    stored_volumes,
    world_storage,
)
from tests.support.indexes import repository, stored_index
from tests.support.trees import assert_same_tree
from tests.support.world import World, make_world


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_disaster_recovery(
    on_backend: OnBackend,
    backend: str,
    make_btrfs: MakeBtrfs,
) -> None:
    w = on_backend(backend)
    before = back_up(w, TEN_DAYS[:4])

    shutil.rmtree(w.work / "state")  # the machine is gone; config, bucket and key remain
    assert w.list() == []
    rebuilt = w.run("catalog", "rebuild")
    assert "4 adopted, 0 skipped (data: 4)\n" in rebuilt.stdout.decode()
    assert rebuilt.stderr == b""
    assert w.list() == before
    # The rebuilt catalog holds what the old one did, S3 checksums included.
    checked = w.run("verify").stdout.decode()
    assert checked.endswith("verify: OK\n")
    if backend != "local":
        assert "checked by size and the storage's checksum\n" in checked

    last = TEN_DAYS[3]
    assert_same_tree(w.snapshots / last.isoformat(), w.restore(last, make_btrfs("dst")))

    refused = w.run("catalog", "rebuild", check=False)
    assert refused.returncode == 2
    [line] = error_lines(refused)
    assert "not empty (4 backup(s)); pass --force" in line
    w.run("catalog", "rebuild", "--force")
    assert w.list() == before


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_a_new_machine_adopts_every_file_index(on_backend: OnBackend, backend: str) -> None:
    w = on_backend(backend)
    before = back_up(w, TEN_DAYS[:3])
    refs = file_indexes(w)
    indexes = [stored_index(w, b["id"]) for b in before]
    shutil.rmtree(w.work / "state")
    assert w.run("catalog", "rebuild").stderr == b""
    assert file_indexes(w) == refs and None not in refs
    assert [stored_index(w, b["id"]) for b in before] == indexes

    # An index lost costs only what reads it: its backup is adopted without one, and said.
    storage = world_storage(w)
    [key] = [
        o.key for o in storage.list(f"{backup_prefix(w)}{before[1]['id']}/") if "index" in o.key
    ]
    storage.delete([key])
    shutil.rmtree(w.work / "state")
    proc = w.run("catalog", "rebuild")
    [event] = events(proc, "rebuild.index_missing")
    assert event["backup_id"] == before[1]["id"] and event["key"] == key
    assert file_indexes(w) == [refs[0], None, refs[2]]
    # Everything else of the backup is as before; `list --json` says it cannot be searched.
    assert w.list() == [{**b, "file_index": i != 1} for i, b in enumerate(before)]


def file_indexes(world: World) -> list[FileIndexRef | None]:
    with repository(world) as repo:
        return [b.file_index for b in repo.catalog.backups("data")]


def test_rebuild_adopts_only_restorable_backups(on_backend: OnBackend) -> None:
    w = on_backend("local")
    full, lost, orphaned = back_up(w, TEN_DAYS[:3])
    archive = w.work / "archive"
    (archive / stored_volumes(w, lost)[0]).unlink()
    stray = archive / "data" / "2000-02-01-full-000000"
    stray.mkdir()
    (stray / "manifest.json").write_text("{}")

    proc = w.run("catalog", "rebuild", "--force", check=False)
    assert proc.returncode == 1
    assert sorted(warnings(proc)) == [
        f"skipped data/{lost['id']}/manifest.json: backup {lost['id']} (data 2000-01-07): "
        "volume 0 missing",
        f"skipped data/{orphaned['id']}/manifest.json: backup {orphaned['id']} (data "
        f"2000-01-14): its parent {lost['id']} is missing or was skipped, so it cannot be "
        "restored",
        "skipped data/2000-02-01-full-000000/manifest.json: format: missing",
    ]
    assert "1 adopted, 3 skipped (data: 1); see the warnings" in proc.stdout.decode()
    assert [b["id"] for b in w.list()] == [full["id"]]


def warnings(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The warning lines a command printed, without their ``btrsendd: warning: `` prefix."""
    return [
        line.removeprefix("btrsendd: warning: ")
        for line in error_lines(proc)
        if line.startswith("btrsendd: warning: ")
    ]


def assert_no_crash(proc: subprocess.CompletedProcess[bytes]) -> None:
    out = proc.stdout.decode() + proc.stderr.decode()
    assert "Traceback" not in out and "internal error" not in out, out


# -- a bucket with bad objects in it ---------------------------------------------------------


@dataclass
class Bucket:
    """The world's storage, written behind btrsendd's back: raw keys, any bytes."""

    world: World
    backend: str

    def put(self, key: str, data: bytes, storage_class: Any = "STANDARD") -> None:
        if self.backend == "local":
            path = self.world.work / "archive" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        storage = load_config(self.world.config).storage
        assert storage.endpoint_url is not None and storage.bucket is not None
        s3_client(storage.endpoint_url).put_object(
            Bucket=storage.bucket, Key=key, Body=data, StorageClass=storage_class
        )

    def manifest(self, key: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(world_storage(self.world).get_bytes(key))
        return doc


def forged(
    bucket: Bucket, prefix: str, model: dict[str, Any], day: date, parent: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """A manifest that passes every check, for a backup on ``day`` (a child of ``parent``),
    with volumes of the recorded sizes; its key and document (changes are the caller's)."""
    kind = "full" if parent is None else "inc"
    backup_id = f"{day.isoformat()}-{kind}-f0{day.day:02d}{day.month:02d}"
    doc = {
        **copy.deepcopy(model),
        "id": backup_id,
        "date": day.isoformat(),
        "kind": "full" if parent is None else "incremental",
        "parent": None if parent is None else parent["id"],
        "parent_date": None if parent is None else parent["date"],
        "parent_uuid": None,
        "chain": backup_id if parent is None else parent["chain"],
    }
    for volume in doc["volumes"]:
        bucket.put(f"{prefix}{backup_id}/{volume['name']}", b"\0" * volume["stored_size"])
    return f"{prefix}{backup_id}/manifest.json", doc


def hostile_objects(bucket: Bucket, good: list[dict[str, Any]]) -> tuple[dict[str, str], str]:
    """Write a bucket's worth of bad manifests beside the good chain ``good``.

    Returns what each bad key's warning must say, and the id of the one forged backup
    that is valid (a copy of the full backup, which rebuild must adopt).
    """
    prefix = backup_prefix(bucket.world)
    full = bucket.manifest(f"{prefix}{good[0]['id']}/manifest.json")
    inc = bucket.manifest(f"{prefix}{good[1]['id']}/manifest.json")
    bad: dict[str, str] = {}

    def put(key: str, data: bytes | dict[str, Any], why: str) -> None:
        bucket.put(key, data if isinstance(data, bytes) else json.dumps(data).encode())
        bad[key] = why

    def broken(day: int, change: Callable[[dict[str, Any]], object], why: str) -> None:
        """A copy of the full backup, moved to a day of its own, with ``change`` made."""
        key, doc = forged(bucket, prefix, full, date(2000, 4, day), None)
        change(doc)
        put(key, doc, why)

    d = f"{prefix}2000-04-"
    put(d + "01-full-000001/manifest.json", b"null", "document: expected a JSON object, got null")
    put(d + "02-full-000002/manifest.json", b"[]", "document: expected a JSON object, got a list")
    put(d + "03-full-000003/manifest.json", b"{not json", "not JSON (Expecting property name")
    put(d + "04-full-000004/manifest.json", b"\xff\xfe\xfa", "not UTF-8 text (byte 0)")
    put(
        d + "05-full-000005/manifest.json",
        b" " * (MAX_MANIFEST_BYTES + 1),
        f"{MAX_MANIFEST_BYTES + 1} bytes, larger than any manifest btrsendd writes",
    )
    broken(6, lambda m: m.update(raw_bytes=str(m["raw_bytes"])), "raw_bytes: expected an integer")
    broken(7, lambda m: m.update(stored_bytes=10**30), "stored_bytes: an integer of 31 digits")
    broken(8, lambda m: m["volumes"][0].update(raw_length=-5), "volumes[0].raw_length: -5 is out")
    broken(9, lambda m: m.update(volumes=[]), "volumes: empty: a backup has at least one volume")
    broken(10, lambda m: m.update(id="../../../etc"), "id: '../../../etc' is not a valid backup")
    broken(11, lambda m: m.update(source="data/../../x"), "source: 'data/../../x' is not a valid")
    # In the wrong place: another backup's manifest, and one at the wrong depth.
    put(
        d + "12-full-000012/manifest.json",
        inc,
        f"it describes backup {inc['id']} of data, which belongs under {prefix}{inc['id']}/",
    )
    put(
        f"{prefix}odd/place/manifest.json",
        full,
        f"not where btrsendd keeps manifests ({prefix.removesuffix('data/')}<source>/",
    )
    # A directory name that would split the warning line (moto cannot route a newline).
    name = "2000-04-13-full-00" + ("\t" if bucket.backend == "moto" else "\n") + "013"
    put(
        f"{prefix}{name}/manifest.json",
        full,
        f"not in a backup's directory: {name!r} is not a valid backup id name",
    )
    # A backup from the future, complete in every other way.
    future = date.today() + timedelta(days=30)
    key, doc = forged(bucket, prefix, full, future, None)
    put(key, doc, f"date: {future} is in the future (later than tomorrow")
    # A complete child of a parent that lost a volume: both are skipped.
    key, parent = forged(bucket, prefix, full, date(2000, 5, 1), None)
    put(key, parent, f"backup {parent['id']} (data 2000-05-01): volume 0 missing")
    world_storage(bucket.world).delete([f"{prefix}{parent['id']}/{full['volumes'][0]['name']}"])
    key, child = forged(bucket, prefix, inc, date(2000, 5, 7), parent)
    put(key, child, f"backup {child['id']} (data 2000-05-07): its parent {parent['id']} is missing")
    # A valid full backup with a recorded stream, and a child whose stream continues another
    # subvolume: the full is adopted, the child is not.
    key, valid = forged(bucket, prefix, full, date(2000, 6, 1), None)
    valid["stream"] = {"version": 1, "name": "2000-06-01", "uuid": "11" * 16, "ctransid": 7}
    valid["stream"].update(parent_uuid=None, parent_ctransid=None)
    bucket.put(key, json.dumps(valid).encode())
    key, stray = forged(bucket, prefix, inc, date(2000, 6, 7), valid)
    stray["stream"] = {**valid["stream"], "uuid": "33" * 16, "parent_uuid": "22" * 16}
    stray["stream"].update(name="2000-06-07", ctransid=9, parent_ctransid=7)
    put(key, stray, f"its send stream continues subvolume {'22' * 16} at ctransid 7, but its")
    # The full backup's id again, under another source: ids are unique in a catalog.
    twin = {**copy.deepcopy(full), "source": "other"}
    other = f"{prefix.removesuffix('data/')}other/{full['id']}/"
    for volume in twin["volumes"]:
        bucket.put(other + volume["name"], b"\0" * volume["stored_size"])
    put(
        other + "manifest.json",
        twin,
        f"backup {full['id']} (other 2000-01-01): backup {full['id']} was already adopted "
        f"from {prefix}{full['id']}/manifest.json",
    )
    return bad, valid["id"]


@pytest.mark.parametrize("backend", ["local", "seaweedfs", "moto"])
def test_rebuild_survives_a_hostile_bucket(
    on_backend: OnBackend, backend: str, make_btrfs: MakeBtrfs
) -> None:
    """Bad manifests of every kind beside a good chain: each is skipped with one warning
    naming its key, the good chain is adopted and restores byte-identical."""
    w = on_backend(backend)
    good = back_up(w, TEN_DAYS[:3])
    bucket = Bucket(w, backend)
    bad, valid = hostile_objects(bucket, good)
    if backend == "moto":
        # Manifests are STANDARD: one in a cold class cannot be read without a thaw.
        key = f"{backup_prefix(w)}2000-04-14-full-000014/manifest.json"
        bucket.put(key, b"{}", storage_class="DEEP_ARCHIVE")
        bad[key] = "s3://"
    shutil.rmtree(w.work / "state")

    proc = w.run("catalog", "rebuild", check=False)
    assert_no_crash(proc)
    assert proc.returncode == 1, proc.stderr.decode()
    lines = warnings(proc)
    assert len(lines) == len(bad), "\n".join(lines)
    for key, why in bad.items():
        [line] = [x for x in lines if x.startswith(f"skipped {shown(key)}: ")]
        assert line.removeprefix(f"skipped {shown(key)}: ").startswith(why) or why in line, line
    summary = f"{len(good) + 1} adopted, {len(bad)} skipped (data: {len(good) + 1})"
    assert summary in proc.stdout.decode()
    assert [b["id"] for b in w.list()] == [b["id"] for b in good] + [valid]
    last = TEN_DAYS[2]
    assert_same_tree(w.snapshots / last.isoformat(), w.restore(last, make_btrfs("dst")))

    # verify reads the same manifests: every bad one is a problem, none a crash.
    checked = w.run("verify", check=False)
    assert_no_crash(checked)
    assert checked.returncode == 1
    problems = checked.stdout.decode()
    for key in bad:
        if "odd/place" not in key and "other/" not in key:  # verify checks data/ only
            assert shown(key) in problems or key.split("/")[-2] in problems, key
    # What a bad manifest's directory holds may be a backup still: never an orphan to delete.
    [orphan] = [line for line in problems.splitlines() if "ORPHAN" in line]
    assert "/odd/place/manifest.json" in orphan


# -- a vault whose inventory lies ------------------------------------------------------------


def test_rebuild_from_a_vault_skips_hostile_archives(
    vault_server: VaultServer, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    """Archive descriptions and inventory entries come from the vault: one that names a key
    with ``..`` or a leading ``/``, is not JSON, or has fields of the wrong types is skipped
    with a warning, never mapped to a key (and so never a path)."""
    name = vault_server.new_vault()
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, vault_server.storage_section(name))
    w.env[POLL_SECONDS_ENV] = "0.05"
    vault_server.job_seconds = 0.2
    good = back_up(w, TEN_DAYS[:2])
    client = glacier(vault_server.endpoint_url)
    hostile = [
        '{"btrsendd":1,"key":"host1/data/../../../etc/passwd"}',
        '{"btrsendd":1,"key":"/etc/cron.d/btrsendd"}',
        '{"btrsendd":1,"key":42}',
        '{"btrsendd":1,"key":"host1/data/2000-03-01-full-000001/manifest.json"',
        '{"btrsendd":2,"key":"host1/data/2000-03-02-full-000002/manifest.json"}',
    ]
    for description in [*hostile, "another program's archive", ""]:
        client.upload_archive(vaultName=name, archiveDescription=description, body=b"x")
    null_key = "host1/data/2000-03-03-full-000003/manifest.json"
    client.upload_archive(
        vaultName=name, archiveDescription=vault.archive_description(null_key), body=b"null"
    )

    shutil.rmtree(w.work / "state")
    vault_server.job_seconds = 5  # the inventory is still being taken when --no-wait exits
    pending = w.run("catalog", "rebuild", "--no-wait")
    assert b"run the same command again" in pending.stdout
    vault_server.job_seconds = 0.2
    # The inventory job's output, changed before btrsendd reads it: entries of wrong types.
    [job] = [j for j in vault_server.vault(name).jobs.values() if j.action == "InventoryRetrieval"]
    inventory = json.loads(job.output)
    model = inventory["ArchiveList"][0]
    wrong = '{"btrsendd":1,"key":"host1/data/2000-03-04-full-000004/manifest.json"}'
    inventory["ArchiveList"] += [
        "not an entry",
        {**model, "ArchiveDescription": 7},
        {**model, "ArchiveDescription": wrong, "Size": "12"},
        {**model, "ArchiveDescription": wrong, "ArchiveId": None},
        {**model, "ArchiveDescription": wrong, "CreationDate": "2000-03-04 noon"},
        {**model, "ArchiveDescription": wrong, "SHA256TreeHash": "../x"},
    ]
    job.output = json.dumps(inventory).encode()

    proc = w.run("catalog", "rebuild", check=False)
    assert_no_crash(proc)
    assert proc.returncode == 1
    skipped = [e["reason"] for e in events(proc, "vault.archive_skipped")]
    assert len(skipped) == len(hostile) + 6, skipped
    for description in hostile:
        assert any(description[:30] in reason for reason in skipped), description
    assert any(r.startswith("ArchiveList[") and "expected an object" in r for r in skipped)
    assert warnings(proc) == [f"skipped {null_key}: document: expected a JSON object, got null"]
    assert "2 adopted, 1 skipped (data: 2)" in proc.stdout.decode()
    assert [b["id"] for b in w.list()] == [b["id"] for b in good]
    index = sqlite3.connect(next((w.work / "state").glob("vault-*.db")))
    keys = [k for (k,) in index.execute("SELECT key FROM archives")]
    index.close()
    assert not [k for k in keys if ".." in k.split("/") or k.startswith("/")]
    assert null_key in keys
    target = make_btrfs("dst")
    last = TEN_DAYS[1].isoformat()
    w.restore(TEN_DAYS[1], target)
    assert_same_tree(w.snapshots / last, target / last)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"ArchiveDescription": '{"btrsendd":1,"key":"a/../b"}'}, "names no object key"),
        ({"ArchiveDescription": '{"btrsendd":1,"key":"a\\nb"}'}, "names no object key"),
        ({"ArchiveDescription": "[" * 5000 + '"btrsendd"'}, "names no object key"),
        ({"ArchiveDescription": '{"btrsendd":1,"key":"\udcff"}'}, "names no object key"),
        ({"ArchiveDescription": ["btrsendd"]}, "expected a string, got a list"),
        ({"Size": True}, "Size: expected an integer, got a boolean"),
        ({"Size": -1}, "Size: -1 is out of range"),
        ({"CreationDate": "2000-03-04T12:00:00"}, "CreationDate: '2000-03-04T12:00:00' has no"),
        ({"SHA256TreeHash": "A" * 64}, "SHA256TreeHash: 'AAAA"),
        ({"ArchiveId": ""}, "ArchiveId: '' is not short printable text"),
    ],
)
def test_inventory_entries_are_read_strictly(entry: dict[str, Any], reason: str) -> None:
    good = {
        "ArchiveId": "an-archive",
        "ArchiveDescription": vault.archive_description("h/data/b/manifest.json"),
        "CreationDate": "2000-03-04T12:00:00Z",
        "Size": 12,
        "SHA256TreeHash": "a" * 64,
    }
    archive = vault.inventory_archive(Object(good, "ArchiveList[3]"))
    assert archive is not None and archive.key == "h/data/b/manifest.json"
    with pytest.raises(Invalid) as caught:
        vault.inventory_archive(Object({**good, **entry}, "ArchiveList[3]"))
    assert str(caught.value).startswith("ArchiveList[3].")
    assert reason in str(caught.value), str(caught.value)
    # Other programs' archives are theirs: not read, not reported.
    other = {**good, "ArchiveDescription": "photos 2019", "Size": "big"}
    assert vault.inventory_archive(Object(other, "ArchiveList[4]")) is None

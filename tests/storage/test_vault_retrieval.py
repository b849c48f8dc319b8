"""Getting archives back out of a Glacier vault: retrieval jobs and ranged, tree-hash-checked
downloads, the index rebuilt from an inventory, the same against moto, and a real-btrfs round
trip through the backup engine, ``catalog rebuild`` and restore.

What moto's glacier service (5.x) lacks, and so is tested only against the test server
(``tests/fixtures/vaultserver.py``): ``Range`` on job output (it sends the whole output) and
the per-range ``x-amz-sha256-tree-hash`` header; real tree hashes (it reports plain SHA-256,
equal to the tree hash only up to 1 MiB, which is why archives sent to moto here stay below
1 MiB); forgotten or failed jobs (``describe_job`` of an unknown job is a 500).  Its archive
ids are the MD5 of the content, so two equal archives would share one id: the contents sent to
it here all differ.  Its jobs finish after 2 s (Expedited), 5 s (Standard, and every
inventory) or 10 s (Bulk), in real time.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from datetime import date
from pathlib import Path

import pytest

from btrsendd import restore
from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage.vault import archives
from btrsendd.storage.vault.archives import MiB
from btrsendd.storage.vault.storage import VaultStorage
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.vaultserver import VaultServer
from tests.storage.helpers import glacier
from tests.storage.vault_helpers import KEY, storage_on, thawed
from tests.support.trees import assert_same_tree, mutate, populate
from tests.support.world import make_world

# -- retrieval jobs and downloads ----------------------------------------------------------


def test_thaw_requests_one_job_and_waits_for_it(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.put_bytes(KEY, b"payload")
    vault_server.job_seconds = 0.3
    assert storage.thaw_state(KEY) == "archived"
    storage.request_thaw(KEY, "Bulk", 7)
    storage.request_thaw(KEY, "Bulk", 7)  # idempotent: a restarted restore pays once
    assert storage.thaw_state(KEY) == "pending"
    with pytest.raises(NotThawedError, match="still running"), storage.open_read(KEY):
        pass
    # A second process (another run of the same restore) finds the job in the index.
    again = storage_on(vault_server, tmp_path, vault=storage.vault, index_path=storage.index.path)
    again.request_thaw(KEY, "Bulk", 7)
    assert len(vault_server.calls_of("initiate_job", storage.vault)) == 1
    time.sleep(0.35)
    assert again.thaw_state(KEY) == "readable"
    assert again.get_bytes(KEY) == b"payload"


def test_expired_and_failed_jobs_are_requested_again(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.put_bytes(KEY, b"payload")
    thawed(storage, KEY)
    vault_server.forget_jobs(storage.vault)  # a day after the job, its output is gone
    assert storage.thaw_state(KEY) == "archived"
    with pytest.raises(NotThawedError):
        storage.get_bytes(KEY)
    storage.request_thaw(KEY, "Standard", 1)
    vault_server.fail_jobs(storage.vault)
    with pytest.raises(StorageError, match="run the same command again"):
        storage.thaw_state(KEY)
    assert storage.thaw_state(KEY) == "archived"
    thawed(storage, KEY)
    assert storage.get_bytes(KEY) == b"payload"
    assert len(vault_server.calls_of("initiate_job", storage.vault)) == 3


def test_a_damaged_range_is_fetched_again(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    data = os.urandom(2 * MiB + 3)
    storage.put_stream(KEY, io.BytesIO(data))
    thawed(storage, KEY)
    vault_server.damage_outputs = 1
    assert storage.get_bytes(KEY) == data
    assert len(vault_server.calls_of("job_output", storage.vault)) == 4
    vault_server.damage_outputs = 100
    with pytest.raises(StorageError, match="do not match the tree hash"):
        storage.get_bytes(KEY)


def test_the_whole_archive_is_checked_against_its_upload(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    """A vault serving other bytes, each range consistent with its own header, is caught by
    the whole-archive tree hash recorded at upload."""
    storage = storage_on(vault_server, tmp_path)
    data = os.urandom(2 * MiB)
    storage.put_stream(KEY, io.BytesIO(data))
    thawed(storage, KEY)
    [job] = vault_server.vault(storage.vault).jobs.values()
    job.output = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(StorageError, match="tree hash"), storage.open_read(KEY) as body:
        body.read()


def test_unknown_keys_are_reported(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    with pytest.raises(StorageError, match="catalog rebuild"):
        storage.thaw_state(KEY)


# -- rebuilding the index from an inventory ------------------------------------------------


def test_rebuild_index_resumes_its_job_and_maps_keys_again(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    keys = [f"host1/data/b/vol-0000{n}" for n in range(3)] + ["host1/data/b/manifest.json"]
    for key in keys:
        storage.put_stream(key, io.BytesIO(os.urandom(MiB + 17)))
    # Someone else's archive in the same vault (the seed's, say) stays out of the map.
    glacier(vault_server.endpoint_url).upload_archive(
        vaultName=storage.vault, archiveDescription="btrsend 2000-01-01 c", body=b"seed"
    )
    vault_server.job_seconds = 0.3

    fresh = tmp_path / "new-machine.db"
    first = storage_on(vault_server, tmp_path, vault=storage.vault, index_path=fresh)
    assert first.rebuild_index(wait=False) is False
    # Interrupted and run again (a new process): it waits for the same job.
    second = storage_on(vault_server, tmp_path, vault=storage.vault, index_path=fresh)
    assert second.rebuild_index(wait=True, poll_seconds=0.05) is True
    assert len(vault_server.calls_of("initiate_job", storage.vault)) == 1

    def mapping(s: VaultStorage) -> list[tuple[str, str, int, str]]:
        return [(a.key, a.archive_id, a.size, a.tree_hash) for a in s.index.archives("")]

    assert mapping(second) == mapping(storage)
    # The rebuilt map reads, tree hashes and all.
    thawed(second, keys[1])
    with second.open_read(keys[1]) as body:
        assert len(body.read()) == MiB + 17


def test_rebuild_keeps_archives_newer_than_the_inventory(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.put_bytes("host1/data/a/manifest.json", b"old")
    vault_server.job_seconds = 0.2
    assert storage.rebuild_index(wait=False) is False  # the inventory is taken now
    time.sleep(0.01)
    storage.put_bytes("host1/data/b/manifest.json", b"new")  # after it was taken
    assert storage.rebuild_index(wait=True, poll_seconds=0.05) is True
    assert [o.key for o in storage.list("")] == [
        "host1/data/a/manifest.json",
        "host1/data/b/manifest.json",
    ]


def test_rebuild_starts_over_when_its_job_has_expired(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.put_bytes(KEY, b"x")
    vault_server.job_seconds = 0.2
    assert storage.rebuild_index(wait=False) is False
    vault_server.forget_jobs(storage.vault)
    assert storage.rebuild_index(wait=True, poll_seconds=0.05) is True
    assert len(vault_server.calls_of("initiate_job", storage.vault)) == 2


# -- moto ----------------------------------------------------------------------------------


def test_moto_single_uploads_jobs_inventory_and_delete(
    moto_server: S3Server, tmp_path: Path
) -> None:
    name = f"moto-{os.urandom(4).hex()}"
    glacier(moto_server.endpoint_url).create_vault(vaultName=name)

    def on_moto(index: str) -> VaultStorage:
        return VaultStorage(
            name,
            index_path=tmp_path / index,
            endpoint_url=moto_server.endpoint_url,
            volume_size=8 * MiB,
            part_size=MiB,
        )

    storage = on_moto("a.db")
    manifest = b'{"format": "btrsendd-manifest", "n": %d}' % os.getpid()
    volume = os.urandom(200_000)
    storage.put_bytes("host1/data/b/manifest.json", manifest)
    storage.put_stream("host1/data/b/vol-00000", io.BytesIO(volume))
    assert [o.key for o in storage.list("host1/data/")] == [
        "host1/data/b/manifest.json",
        "host1/data/b/vol-00000",
    ]
    assert storage.thaw_state("host1/data/b/manifest.json") == "archived"
    with pytest.raises(NotThawedError):
        storage.get_bytes("host1/data/b/manifest.json")
    thawed(storage, "host1/data/b/manifest.json")
    assert storage.get_bytes("host1/data/b/manifest.json") == manifest
    thawed(storage, "host1/data/b/vol-00000")
    with storage.open_read("host1/data/b/vol-00000") as body:
        assert hashlib.sha256(body.read()).digest() == hashlib.sha256(volume).digest()

    rebuilt = on_moto("b.db")
    assert rebuilt.rebuild_index(wait=True, poll_seconds=0.5) is True
    assert list(rebuilt.list("")) == list(storage.list(""))

    storage.delete(["host1/data/b/vol-00000", "host1/data/b/vol-00000"])
    assert [o.key for o in storage.list("")] == ["host1/data/b/manifest.json"]
    assert glacier(moto_server.endpoint_url).describe_vault(vaultName=name)["NumberOfArchives"] == 1


# -- the whole engine on real btrfs --------------------------------------------------------

DAYS = [date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14), date(2000, 1, 21), date(2000, 2, 1)]


def test_days_of_backups_restore_through_a_vault_on_a_new_machine(
    vault_server: VaultServer, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    """Back up several days with the real CLI into a vault (multi-volume, multipart), lose the
    state directory with its vault index, then `catalog rebuild` (an inventory job, a
    retrieval job per manifest) and `restore` (ranged, tree-hash-checked job output)."""
    name = vault_server.new_vault()
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, vault_server.storage_section(name))
    w.pipeline = 'compression = "zstd"\nvolume_size = "12MiB"\npart_size = "5MiB"'
    w.env[restore.POLL_SECONDS_ENV] = "0.05"
    vault_server.job_seconds = 0.2
    populate(w.source, big=26 * MiB)
    for n, day in enumerate(DAYS):
        if n:
            mutate(w.source, n)
        w.run("backup", "--date", day.isoformat())
    before = w.list()
    assert [(b["date"], b["kind"]) for b in before] == [
        (DAYS[0].isoformat(), "full"),
        (DAYS[1].isoformat(), "incremental"),
        (DAYS[2].isoformat(), "incremental"),
        (DAYS[3].isoformat(), "full"),
        (DAYS[4].isoformat(), "incremental"),
    ]
    assert before[0]["volumes"] == 3 and before[0]["storage_class"] == archives.STORAGE_CLASS
    assert len(vault_server.calls_of("upload_part", name)) >= 8  # two 8 MiB parts a volume

    shutil.rmtree(w.work / "state")  # the machine is gone: catalog and vault index with it
    pending = w.run("catalog", "rebuild", "--no-wait")
    assert b"run the same command again" in pending.stdout
    w.run("catalog", "rebuild")
    assert [(b["id"], b["volumes"]) for b in w.list()] == [(b["id"], b["volumes"]) for b in before]

    target = make_btrfs("dst")
    last = DAYS[-1].isoformat()
    w.restore(DAYS[-1], target)
    assert_same_tree(w.snapshots / last, target / last)
    assert sorted(p.name for p in target.iterdir()) == [last]

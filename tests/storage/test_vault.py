"""The Glacier vault backend beyond the contract (``test_contract.py``): multipart and ranged
downloads against a server that enforces the vault protocol (``tests/fixtures/vaultserver.py``),
single uploads, jobs and inventories against moto, and a real-btrfs round trip through the
backup engine and restore.

What moto's glacier service (5.x) lacks, and so is tested only against the test server:
multipart uploads; ``Range`` on job output (it sends the whole output) and the per-range
``x-amz-sha256-tree-hash`` header; real tree hashes (it reports plain SHA-256, equal to the tree
hash only up to 1 MiB, which is why archives sent to moto here stay below 1 MiB); checks of
the checksums a client sends; forgotten or failed jobs (``describe_job`` of an unknown job is a
500).  Its archive ids are the MD5 of the content, so two equal archives would share one id:
the contents sent to it here all differ.  Its jobs finish after 2 s (Expedited), 5 s
(Standard, and every inventory) or 10 s (Bulk), in real time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from btrsendd import restore
from btrsendd.config import (
    PipelineConfig,
    SourceConfig,
    StorageConfig,
)
from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage import backend_of, open_storage
from btrsendd.storage.base import Stored
from btrsendd.storage.vault import archives, upload
from btrsendd.storage.vault.archives import (
    GiB,
    MiB,
    archive_description,
    choose_part_size,
    is_part_size,
    key_from_description,
)
from btrsendd.storage.vault.storage import VaultStorage
from btrsendd.storage.vault.treehash import tree_hash
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.vaultserver import VaultServer
from tests.storage.helpers import glacier
from tests.support.trees import assert_same_tree, mutate, populate
from tests.support.world import make_world

KEY = "host1/data/2000-01-01-full-abc123/vol-00000.btrfs.zst.gpg"


def storage_on(server: VaultServer, tmp_path: Path, **options: Any) -> VaultStorage:
    """A backend on a fresh vault of the test server: 1 MiB parts and ranges, quick retries
    that give up within half a second."""
    settings: dict[str, Any] = {
        "volume_size": 8 * MiB,
        "part_size": MiB,
        "read_range": MiB,
        "retry_delay": 0.01,
        "retry_budget": 0.5,
        **options,
    }
    name = settings.pop("vault", None) or server.new_vault()
    index = settings.pop("index_path", None) or tmp_path / f"vault-{name}.db"
    return VaultStorage(name, index_path=index, endpoint_url=server.endpoint_url, **settings)


def thawed(storage: VaultStorage, key: str, timeout: float = 30) -> None:
    """Request a retrieval and wait until the job is done."""
    storage.request_thaw(key, "Expedited", 1)
    deadline = time.monotonic() + timeout
    while storage.thaw_state(key) != "readable":
        assert time.monotonic() < deadline, f"{key} never became readable"
        time.sleep(0.05)


class FailingStream:
    """Yields ``good`` bytes, then fails like a pipeline stage that died."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self, size: int = -1, /) -> bytes:
        if self.left <= 0:
            raise OSError("compressor died")
        n = min(size, self.left)
        self.left -= n
        return os.urandom(n)


# -- part sizes and descriptions -----------------------------------------------------------


def test_part_size_is_a_power_of_two_mib_that_fits_a_volume_in_10000_parts() -> None:
    assert choose_part_size(GiB) == MiB
    assert choose_part_size(GiB, 16 * MiB) == 16 * MiB
    assert choose_part_size(GiB, 5 * MiB) == 8 * MiB  # S3's minimum, rounded up
    assert choose_part_size(GiB, 5 * GiB) == 4 * GiB  # S3's maximum, capped
    # 100 GiB (plus encoding headroom) needs 10.4 MiB per part at 10,000 parts.
    assert choose_part_size(100 * GiB) == 16 * MiB
    assert choose_part_size(10_000 * MiB) == 2 * MiB  # headroom pushes it past 1 MiB
    for volume in (MiB, GiB, 37 * GiB, 1024 * GiB, 39_000 * GiB):
        size = choose_part_size(volume)
        assert is_part_size(size)
        assert size * archives.MAX_PARTS >= volume
    with pytest.raises(ValueError, match="volume_size"):
        choose_part_size(40_000 * GiB)
    assert not any(is_part_size(n) for n in (0, MiB // 2, 3 * MiB, 8 * GiB, MiB + 1))


def test_archive_description_names_the_key_in_printable_ascii() -> None:
    text = archive_description(KEY)
    assert json.loads(text) == {"btrsendd": 1, "key": KEY}
    assert key_from_description(text) == KEY
    odd = "hôst/data/2000-01-01-full-abc123/manifest.json"
    text = archive_description(odd)
    assert all(" " <= c <= "~" for c in text)
    assert key_from_description(text) == odd
    with pytest.raises(ValueError, match=r"shorten storage\.prefix"):
        archive_description("p" * 1000 + "/" + KEY)
    # Other people's archives (the seed's among them) are not btrsendd's keys.
    for foreign in ["", "btrsend 2000-01-01 c", "[1]", '{"btrsendd": 2, "key": "a/b"}']:
        assert key_from_description(foreign) is None
    assert key_from_description('{"btrsendd": 1, "key": "../etc/passwd"}') is None


# -- the test server holds the documented rules --------------------------------------------


def test_server_rejects_part_sizes_that_are_not_a_power_of_two_mib(
    vault_server: VaultServer,
) -> None:
    client = glacier(vault_server.endpoint_url)
    name = vault_server.new_vault()
    for bad in (3 * MiB, MiB // 2, 8 * GiB):
        with pytest.raises(ClientError, match="part size"):
            client.initiate_multipart_upload(vaultName=name, partSize=str(bad))
    client.initiate_multipart_upload(vaultName=name, partSize=str(4 * MiB))


def test_server_rejects_misaligned_oversized_and_misdigested_parts(
    vault_server: VaultServer,
) -> None:
    client = glacier(vault_server.endpoint_url)
    name = vault_server.new_vault()
    upload = client.initiate_multipart_upload(vaultName=name, partSize=str(MiB))["uploadId"]
    part = os.urandom(MiB)

    def send(first: int, body: bytes, checksum: str | None = None) -> None:
        client.upload_multipart_part(
            vaultName=name,
            uploadId=upload,
            range=f"bytes {first}-{first + len(body) - 1}/*",
            body=body,
            checksum=checksum or tree_hash(body).hex(),
        )

    with pytest.raises(ClientError, match="not aligned"):
        send(MiB // 2, part)
    with pytest.raises(ClientError, match="longer than the part size"):
        send(0, part + b"x")
    with pytest.raises(ClientError, match="Checksum mismatch"):
        send(0, part, tree_hash(b"something else").hex())
    send(0, part)
    send(MiB, b"tail")
    whole = tree_hash(part + b"tail").hex()
    with pytest.raises(ClientError, match="archive size"):
        client.complete_multipart_upload(
            vaultName=name, uploadId=upload, archiveSize=str(MiB + 5), checksum=whole
        )
    with pytest.raises(ClientError, match="Checksum mismatch"):
        client.complete_multipart_upload(
            vaultName=name,
            uploadId=upload,
            archiveSize=str(MiB + 4),
            checksum=tree_hash(part).hex(),
        )
    done = client.complete_multipart_upload(
        vaultName=name, uploadId=upload, archiveSize=str(MiB + 4), checksum=whole
    )
    assert vault_server.vault(name).archives[done["archiveId"]].data == part + b"tail"


def test_server_rejects_a_short_part_that_is_not_the_last(vault_server: VaultServer) -> None:
    client = glacier(vault_server.endpoint_url)
    name = vault_server.new_vault()
    upload = client.initiate_multipart_upload(vaultName=name, partSize=str(MiB))["uploadId"]
    for first, body in ((0, b"short"), (MiB, os.urandom(MiB))):
        client.upload_multipart_part(
            vaultName=name,
            uploadId=upload,
            range=f"bytes {first}-{first + len(body) - 1}/*",
            body=body,
            checksum=tree_hash(body).hex(),
        )
    with pytest.raises(ClientError, match=r"do not cover|only the last"):
        client.complete_multipart_upload(
            vaultName=name, uploadId=upload, archiveSize=str(MiB + 5), checksum="0" * 64
        )


def test_server_serves_job_output_by_range_with_tree_hashes(vault_server: VaultServer) -> None:
    client = glacier(vault_server.endpoint_url)
    name = vault_server.new_vault()
    data = os.urandom(3 * MiB + 10)
    archive_id = client.upload_archive(vaultName=name, body=data)["archiveId"]
    job = client.initiate_job(
        vaultName=name, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )["jobId"]
    aligned = client.get_job_output(vaultName=name, jobId=job, range=f"bytes={MiB}-{3 * MiB - 1}")
    assert aligned["body"].read() == data[MiB : 3 * MiB]
    assert aligned["checksum"] == tree_hash(data[MiB : 3 * MiB]).hex()
    assert aligned["contentRange"] == f"bytes {MiB}-{3 * MiB - 1}/{len(data)}"
    tail = client.get_job_output(vaultName=name, jobId=job, range=f"bytes={3 * MiB}-{len(data)}")
    assert tail["checksum"] == tree_hash(data[3 * MiB :]).hex()
    unaligned = client.get_job_output(vaultName=name, jobId=job, range="bytes=5-1048580")
    assert unaligned["body"].read() == data[5:1048581]
    assert "checksum" not in unaligned


# -- uploads -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [3 * MiB + 5, 4 * MiB], ids=["ragged", "whole-parts"])
def test_stream_uploads_in_aligned_parts_and_reads_back(
    vault_server: VaultServer, tmp_path: Path, size: int
) -> None:
    storage = storage_on(vault_server, tmp_path)
    data = os.urandom(size)
    assert storage.put_stream(KEY, io.BytesIO(data)) == Stored(size)
    expected = [f"bytes {s}-{min(s + MiB, size) - 1}/*" for s in range(0, size, MiB)]
    assert sorted(vault_server.calls_of("upload_part", storage.vault)) == expected
    [archive] = vault_server.vault(storage.vault).archives.values()
    assert archive.data == data
    assert json.loads(archive.description)["key"] == KEY
    [info] = storage.list("host1/")
    assert (info.key, info.size, info.storage_class) == (KEY, size, "GLACIER_VAULT")

    thawed(storage, KEY)
    with storage.open_read(KEY) as body:
        assert body.read() == data
    # One request per 1 MiB range, each checked against the tree hash sent with it.
    assert len(vault_server.calls_of("job_output", storage.vault)) == -(-size // MiB)


def test_small_objects_are_single_uploads(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.put_bytes("host1/data/x/manifest.json", b'{"format": 1}')
    assert vault_server.calls_of("upload_archive", storage.vault)
    assert not vault_server.calls_of("initiate_upload", storage.vault)
    with pytest.raises(NotThawedError, match="retrieval job"):
        storage.get_bytes("host1/data/x/manifest.json")
    thawed(storage, "host1/data/x/manifest.json")
    assert storage.get_bytes("host1/data/x/manifest.json") == b'{"format": 1}'


def test_failed_parts_are_retried(vault_server: VaultServer, tmp_path: Path) -> None:
    # botocore makes one attempt per request, so the retries seen are the backend's own.
    storage = storage_on(vault_server, tmp_path)
    vault_server.fail["upload_part"] = 2
    data = os.urandom(3 * MiB)
    storage.put_stream(KEY, io.BytesIO(data))
    [archive] = vault_server.vault(storage.vault).archives.values()
    assert archive.data == data
    assert len(vault_server.calls_of("upload_part", storage.vault)) == 5


def test_an_upload_that_cannot_finish_is_aborted(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    vault_server.fail["upload_part"] = 1000
    with pytest.raises(StorageError, match="ServiceUnavailable"):
        storage.put_stream(KEY, io.BytesIO(os.urandom(3 * MiB)))
    state = vault_server.vault(storage.vault)
    assert vault_server.calls_of("abort_upload", storage.vault)
    assert not state.uploads and not state.archives
    assert list(storage.list("")) == []


def test_a_failing_stream_aborts_the_upload(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    with pytest.raises(StorageError, match="compressor died"):
        storage.put_stream(KEY, FailingStream(2 * MiB + 100))
    state = vault_server.vault(storage.vault)
    assert not state.uploads and not state.archives
    assert list(storage.list("")) == []


def test_a_stream_beyond_10000_parts_is_refused(
    vault_server: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = storage_on(vault_server, tmp_path)  # 1 MiB parts, chosen under the real limit
    monkeypatch.setattr(upload, "MAX_PARTS", 3)
    storage.put_stream(KEY, io.BytesIO(os.urandom(3 * MiB)))  # exactly at the limit
    with pytest.raises(StorageError, match=r"lower pipeline\.volume_size"):
        storage.put_stream("host1/data/b/vol-00001", io.BytesIO(os.urandom(3 * MiB + 1)))
    assert not vault_server.vault(storage.vault).uploads
    assert [o.key for o in storage.list("")] == [KEY]


def test_a_key_too_long_for_a_description_is_refused_before_uploading(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    with pytest.raises(StorageError, match=r"shorten storage\.prefix"):
        storage.put_bytes("p" * 1100 + "/manifest.json", b"{}")
    assert not vault_server.calls_of("upload_archive", storage.vault)


def test_rewriting_a_key_deletes_its_previous_archive(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.put_bytes(KEY, b"first")
    storage.put_bytes(KEY, b"second")
    [archive] = vault_server.vault(storage.vault).archives.values()
    assert archive.data == b"second"
    assert [o.size for o in storage.list("")] == [6]


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


# -- deletion ------------------------------------------------------------------------------


def test_delete_removes_archives_and_tolerates_missing_ones(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    storage = storage_on(vault_server, tmp_path)
    keys = [f"host1/data/b/vol-0000{n}" for n in range(3)]
    for n, key in enumerate(keys):
        storage.put_bytes(key, f"volume {n}".encode())
    state = vault_server.vault(storage.vault)
    gone = next(o for o in state.archives.values() if o.data == b"volume 1")
    del state.archives[gone.id]  # deleted behind our back: a retried deletion
    storage.delete([*keys[:2], "host1/data/b/never-stored"])
    assert [o.key for o in storage.list("")] == keys[2:]
    assert [a.data for a in state.archives.values()] == [b"volume 2"]


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


# -- access and configuration --------------------------------------------------------------


def test_check_access_names_a_missing_vault(vault_server: VaultServer, tmp_path: Path) -> None:
    storage = storage_on(vault_server, tmp_path)
    storage.check_access()
    missing = storage_on(vault_server, tmp_path, vault="no-such-vault")
    with pytest.raises(StorageError, match="vault 'no-such-vault' does not exist"):
        missing.check_access()
    assert not (tmp_path / "vault-no-such-vault.db").exists()  # nothing written by a check


def test_open_storage_builds_a_vault_with_its_index_in_the_state_dir(tmp_path: Path) -> None:
    cfg = StorageConfig(backend="glacier-vault", vault="Backup", region="eu-west-1")
    storage = open_storage(cfg, PipelineConfig(volume_size=GiB, part_size=5 * MiB), tmp_path)
    assert isinstance(storage, VaultStorage)
    assert storage.index.path == tmp_path / "vault-eu-west-1-Backup.db"
    assert storage.part_size == 8 * MiB
    assert "Backup" in storage.description and "eu-west-1" in storage.description
    with pytest.raises(ValueError, match="state_dir"):
        open_storage(cfg, PipelineConfig())


def test_check_config_knows_the_vault_rules(tmp_path: Path) -> None:
    src = SourceConfig(name="data", path=tmp_path, snapshot_dir=tmp_path / "s")
    good = StorageConfig(backend="glacier-vault", vault="Backup", region="eu-west-1")
    assert backend_of(good).findings(good, [src]) == []
    bad = StorageConfig(
        backend="glacier-vault", vault="my vault!", region="mars-1", prefix="p" * 1000
    )
    findings = {f.key: f.message for f in backend_of(bad).findings(bad, [src])}
    assert set(findings) == {"storage.vault", "storage.region", "storage.prefix"}
    assert "list-vaults" in findings["storage.vault"]
    assert "shorten storage.prefix" in findings["storage.prefix"]
    local = StorageConfig(backend="local", path=tmp_path)
    assert backend_of(local).findings(local, [src]) == []


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

"""The Glacier vault backend beyond the contract (``test_contract.py``): part sizes and
archive descriptions, uploads (single and multipart, retried, aborted, refused), deletion,
access checks and configuration.

Multipart uploads run against the test server (``tests/fixtures/vaultserver.py``), which holds
the vault protocol's rules (``test_vault_server.py`` checks that it does); moto's glacier
service has no multipart uploads.  Getting archives back (jobs, ranged downloads, inventories,
moto, a whole restore) is in ``test_vault_retrieval.py``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

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
from tests.fixtures.vaultserver import VaultServer
from tests.storage.vault_helpers import KEY, storage_on, thawed


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

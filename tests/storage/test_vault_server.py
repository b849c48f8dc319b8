"""The vault test server (``tests/fixtures/vaultserver.py``) holds the documented rules.

The backend's multipart and ranged-download tests (``test_vault.py``,
``test_vault_retrieval.py``) mean something only if the server refuses what AWS refuses and
serves what AWS serves (moto checks none of the checksums a client sends), so it is checked
here on its own, through a raw Glacier client with tree hashes computed by the backend's
``treehash`` module.
"""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from btrsendd.storage.vault.archives import GiB, MiB
from btrsendd.storage.vault.treehash import tree_hash
from tests.fixtures.vaultserver import VaultServer
from tests.storage.helpers import glacier


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

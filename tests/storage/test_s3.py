"""The S3 backend beyond the contract (``test_contract.py``), against real servers (moto_server
and SeaweedFS): its part layout and checksums, classes, errors, retries and memory; plus its
pure helpers."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from btrsendd.config import PipelineConfig, StorageConfig
from btrsendd.errors import StorageError
from btrsendd.storage import open_storage
from btrsendd.storage.base import Stored
from btrsendd.storage.retry import retry_call
from btrsendd.storage.s3 import bucket as s3mod
from btrsendd.storage.s3 import versions as s3versions
from btrsendd.storage.s3.bucket import S3Storage, thaw_state_from_head
from btrsendd.storage.s3.client import sha256_b64
from btrsendd.storage.s3.upload import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
    TiB,
    composite_checksum,
    part_size_for,
)
from tests.fixtures.s3servers import S3Server, _free_ports
from tests.storage.helpers import Dribble, client_error

PART = 5 * MiB


def make_storage(server: S3Server, **kwargs: Any) -> S3Storage:
    kwargs.setdefault("part_size", PART)
    return S3Storage(server.new_bucket(), endpoint_url=server.endpoint_url, **kwargs)


def open_uploads(storage: S3Storage) -> list[str]:
    uploads = storage._client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    return [u["Key"] for u in uploads]


# -- pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("base", [MIN_PART_SIZE, 16 * MiB, 100 * MiB, MAX_PART_SIZE])
def test_part_sizes_grow_so_5_tib_fits_in_10000_parts(base: int) -> None:
    sizes = [part_size_for(n, base) for n in range(1, MAX_PARTS + 1)]
    assert sizes[0] == base
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in sizes)
    assert sizes == sorted(sizes)
    assert sum(sizes) >= 5 * TiB


def test_small_streams_keep_the_configured_part_size() -> None:
    assert {part_size_for(n, 16 * MiB) for n in range(1, 900 + 1)} == {16 * MiB}
    assert part_size_for(901, 16 * MiB) == 32 * MiB


@pytest.mark.parametrize(
    ("storage_class", "restore", "state"),
    [
        ("STANDARD", None, "readable"),
        (None, None, "readable"),  # HeadObject omits StorageClass for STANDARD
        ("GLACIER_IR", None, "readable"),
        ("DEEP_ARCHIVE", None, "archived"),
        ("GLACIER", 'ongoing-request="true"', "pending"),
        (
            "DEEP_ARCHIVE",
            'ongoing-request="false", expiry-date="Fri, 23 Dec 2012 00:00:00 GMT"',
            "readable",
        ),
    ],
)
def test_thaw_state_from_head(storage_class: str | None, restore: str | None, state: str) -> None:
    assert thaw_state_from_head(storage_class, restore) == state


def test_retry_call_backs_off_until_success() -> None:
    delays: list[float] = []
    failures = [client_error("InternalError", 500), ConnectionResetError()]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert retry_call(flaky, attempts=4, base_delay=0.5, retryable=bool, sleep=delays.append) == (
        "done"
    )
    assert delays == [0.5, 1.0]


@pytest.mark.parametrize(("retryable", "delays"), [(True, [1, 2]), (False, [])])
def test_retry_call_raises_the_last_or_first_unretryable_failure(
    retryable: bool, delays: list[float]
) -> None:
    slept: list[float] = []

    def always_fails() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        retry_call(
            always_fails,
            attempts=3,
            base_delay=1,
            retryable=lambda exc: retryable,
            sleep=slept.append,
        )
    assert slept == delays


def test_open_storage_builds_s3_from_config() -> None:
    storage = open_storage(
        StorageConfig(bucket="b", endpoint_url="http://127.0.0.1:9", storage_class="GLACIER"),
        PipelineConfig(part_size=8 * MiB, concurrency=3),
    )
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.storage_class) == ("b", "GLACIER")
    assert (storage.part_size, storage.concurrency) == (8 * MiB, 3)
    assert storage.description == "s3://b at http://127.0.0.1:9"


# -- both servers --------------------------------------------------------------------------


def test_multipart_stream_parts_and_checksum(s3_server: S3Server) -> None:
    storage = make_storage(s3_server, storage_class="STANDARD")
    data = os.urandom(23 * MiB)
    stored = storage.put_stream("h/s/b1/vol-00000", Dribble(data, step=256 * 1024))
    assert stored.size == len(data)
    head = storage._client.head_object(Bucket=storage.bucket, Key="h/s/b1/vol-00000")
    assert head["ETag"].endswith('-5"'), "23 MiB in 5 MiB parts is a 5-part upload"
    # The checksum recorded at upload is the server's own (the contract: reported again).
    parts = [data[n * PART : (n + 1) * PART] for n in range(5)]
    assert stored.checksum == "sha256:" + composite_checksum([sha256_b64(p) for p in parts])
    assert open_uploads(storage) == []


@pytest.mark.parametrize("size", [0, 1, 1000, PART - 1, PART])
def test_small_and_empty_streams_are_single_puts(s3_server: S3Server, size: int) -> None:
    storage = make_storage(s3_server, storage_class="STANDARD")
    data = os.urandom(size)
    stored = storage.put_stream("k", Dribble(data))
    # One whole part goes up as a multipart upload of one part, with a composite checksum.
    checksum = sha256_b64(data) if size < PART else composite_checksum([sha256_b64(data)])
    assert stored == Stored(size, "sha256:" + checksum)


def test_storage_classes_and_listing(s3_server: S3Server) -> None:
    storage = make_storage(s3_server)
    storage.put_stream("h/s/b1/vol-00000", Dribble(os.urandom(PART + 1)))
    storage.put_stream("h/s/b1/vol-00001", Dribble(b"tail"))
    storage.put_bytes("h/s/b1/manifest.json", b"{}")
    storage.put_bytes("h/t/b2/manifest.json", b"{}")
    listed = [(o.key, o.storage_class) for o in storage.list("h/s/")]
    assert listed == [
        ("h/s/b1/manifest.json", "STANDARD"),
        ("h/s/b1/vol-00000", "DEEP_ARCHIVE"),
        ("h/s/b1/vol-00001", "DEEP_ARCHIVE"),
    ]
    assert storage.get_bytes("h/s/b1/manifest.json") == b"{}"


def test_missing_bucket_is_explained(s3_server: S3Server) -> None:
    storage = S3Storage("no-such-bucket-here", endpoint_url=s3_server.endpoint_url)
    for attempt in (storage.check_access, lambda: storage.put_bytes("k", b"x")):
        with pytest.raises(StorageError, match=r"does not exist.*create it or fix storage.bucket"):
            attempt()
    make_storage(s3_server).check_access()


# -- moto: cold storage semantics and injected failures -----------------------------------


def test_failing_part_aborts_the_upload(
    moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make_storage(moto_server)
    real = storage._client.upload_part

    def upload_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 3:
            raise client_error("AccessDenied", 403)
        return real(**kwargs)

    monkeypatch.setattr(storage._client, "upload_part", upload_part)
    with pytest.raises(StorageError, match=r"access denied.*credentials"):
        storage.put_stream("vol", Dribble(os.urandom(6 * PART), step=MiB))
    assert open_uploads(storage) == []


def test_transient_part_failures_are_retried(
    moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3mod, "UPLOAD_RETRY_DELAY", 0.01)
    storage = make_storage(moto_server, storage_class="STANDARD")
    real = storage._client.upload_part
    failures = iter([client_error("InternalError", 500), client_error("BadDigest", 400)])

    def upload_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            failure = next(failures, None)
            if failure is not None:
                raise failure
        return real(**kwargs)

    monkeypatch.setattr(storage._client, "upload_part", upload_part)
    data = os.urandom(3 * PART)
    storage.put_stream("vol", Dribble(data, step=MiB))
    assert storage.get_bytes("vol") == data


def test_memory_stays_within_concurrency_parts(
    moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes read but not yet uploaded never exceed concurrency x part size."""
    concurrency = 3
    storage = make_storage(moto_server, concurrency=concurrency, storage_class="STANDARD")
    real = storage._client.upload_part
    lock = threading.Lock()
    state = {"uploaded": 0, "running": 0, "most_running": 0, "most_pending": 0}

    def upload_part(**kwargs: Any) -> Any:
        with lock:
            state["running"] += 1
            state["most_running"] = max(state["most_running"], state["running"])
        time.sleep(0.1)
        result = real(**kwargs)
        with lock:
            state["running"] -= 1
            state["uploaded"] += len(kwargs["Body"])
        return result

    class Watched(Dribble):
        def read(self, size: int = -1, /) -> bytes:
            chunk = super().read(size)
            with lock:
                pending = self.data.tell() - state["uploaded"]
                state["most_pending"] = max(state["most_pending"], pending)
            return chunk

    monkeypatch.setattr(storage._client, "upload_part", upload_part)
    storage.put_stream("vol", Watched(os.urandom(8 * PART), step=MiB))
    assert state["most_pending"] <= concurrency * PART
    assert 2 <= state["most_running"] <= concurrency


def test_delete_batches(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3versions, "DELETE_BATCH", 2)
    storage = make_storage(moto_server)
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        storage.put_bytes(key, b"x")
    real = storage._client.delete_objects
    sizes: list[int] = []

    def delete_objects(**kwargs: Any) -> Any:
        sizes.append(len(kwargs["Delete"]["Objects"]))
        return real(**kwargs)

    monkeypatch.setattr(storage._client, "delete_objects", delete_objects)
    storage.delete([*keys, "missing"])
    assert sizes == [2, 2, 2]
    assert list(storage.list("")) == []


def test_unreachable_endpoint_is_explained() -> None:
    (port,) = _free_ports(1)
    storage = S3Storage("b", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(StorageError, match=f"cannot reach http://127.0.0.1:{port}"):
        storage.check_access()


# -- SeaweedFS: a server that checks what it is sent ---------------------------------------


def test_seaweedfs_rejects_a_wrong_checksum(seaweedfs_server: S3Server) -> None:
    client = seaweedfs_server.client()
    bucket = seaweedfs_server.new_bucket()
    data = os.urandom(PART)
    wrong = sha256_b64(b"something else")
    with pytest.raises(ClientError, match="BadDigest"):
        client.put_object(
            Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong
        )
    upload = client.create_multipart_upload(Bucket=bucket, Key="m", ChecksumAlgorithm="SHA256")
    with pytest.raises(ClientError, match="BadDigest"):
        client.upload_part(
            Bucket=bucket,
            Key="m",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=wrong,
        )
    client.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=upload["UploadId"])
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


def test_seaweedfs_records_our_part_checksums(seaweedfs_server: S3Server) -> None:
    """The server holds a SHA-256 per part that matches ours: checksums were sent and checked."""
    storage = make_storage(seaweedfs_server)
    data = os.urandom(2 * PART + 1234)
    storage.put_stream("vol", Dribble(data, step=MiB))
    parts = [data[i : i + PART] for i in range(0, len(data), PART)]
    digests = b"".join(hashlib.sha256(p).digest() for p in parts)
    expected = f"{base64.b64encode(hashlib.sha256(digests).digest()).decode()}-{len(parts)}"
    head = storage._client.head_object(Bucket=storage.bucket, Key="vol", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected


def test_seaweedfs_checks_credentials(
    seaweedfs_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = seaweedfs_server.new_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    storage = S3Storage(bucket, endpoint_url=seaweedfs_server.endpoint_url, max_attempts=1)
    with pytest.raises(StorageError, match=r"access denied.*check the AWS credentials") as err:
        storage.check_access()
    assert "wrong-secret-value" not in str(err.value)


def test_seaweedfs_refuses_restore_requests_with_advice(seaweedfs_server: S3Server) -> None:
    storage = make_storage(seaweedfs_server)
    storage.put_stream("vol", Dribble(b"data"))
    assert storage.get_bytes("vol") == b"data"  # archived in name only
    with pytest.raises(StorageError, match=r"does not support restore requests.*STANDARD"):
        storage.request_thaw("vol", "Bulk", 1)

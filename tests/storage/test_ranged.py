"""Downloads as concurrent byte ranges (``btrsendd/storage/ranged.py``), on real S3 servers.

Each object is read as ``part_size`` ranges, several at once, and reassembled in order; a
range that fails or stalls is fetched again by itself (the fault proxy in front of SeaweedFS
counts what the server was asked for); an object replaced while it is read is refused; memory
is the storage's range budget, whatever number of objects is open at once.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from botocore.exceptions import FlexibleChecksumError

from btrsendd.errors import StorageError
from btrsendd.storage.s3 import bucket as s3mod
from btrsendd.storage.s3.bucket import S3Storage
from btrsendd.storage.s3.upload import MiB
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.storage.helpers import Dribble

PART = 5 * MiB
#: The impatient client's connect and read timeout; stalls last longer than this.
TIMEOUT = 1.0
STALL = 2.0
KEY = "h/s/b/vol-00000"


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "UPLOAD_RETRY_DELAY", 0.05)
    monkeypatch.setattr(s3mod, "RETRY_MAX_DELAY", 0.5)


def storage_at(endpoint_url: str, bucket: str, **kwargs: Any) -> S3Storage:
    kwargs = {
        "storage_class": "STANDARD",
        "part_size": PART,
        "concurrency": 3,
        "connect_timeout": TIMEOUT,
        "read_timeout": TIMEOUT,
        **kwargs,
    }
    return S3Storage(bucket, endpoint_url=endpoint_url, **kwargs)


def ranges_asked(proxy: FaultProxy, key: str) -> list[str]:
    """The Range of every GET of ``key`` that reached the proxy, in order of arrival."""
    return [e.range for e in proxy.exchanges if e.operation == "GetObject" and e.key == key]


def part_ranges(size: int) -> list[str]:
    return [f"bytes={s}-{min(s + PART, size) - 1}" for s in range(0, size, PART)]


def test_an_object_is_read_as_ranges_and_reassembled_in_order(s3_server: S3Server) -> None:
    storage = storage_at(s3_server.endpoint_url, s3_server.new_bucket())
    data = os.urandom(4 * PART + 12345)
    storage.put_stream(KEY, Dribble(data, step=MiB))
    with storage.open_read(KEY) as body:
        assert body.read() == data
    # Also when read in pieces that straddle the ranges.
    with storage.open_read(KEY) as body:
        pieces = []
        while piece := body.read(PART // 3 + 1):
            pieces.append(piece)
    assert b"".join(pieces) == data
    assert storage._ranges.peak <= 3 * PART
    assert storage._ranges.held == 0  # nothing kept once no object is open


def test_objects_opened_ahead_share_one_memory_budget(moto_server: S3Server) -> None:
    """Three objects open at once (a restore opens the next volume while it decodes one):
    each reads back whole, in the order opened, and no more than ``concurrency`` ranges are
    ever in memory, by the budget's own count of the buffers that exist."""
    storage = storage_at(moto_server.endpoint_url, moto_server.new_bucket(), concurrency=2)
    blobs = [os.urandom(3 * PART + n) for n in (1, 2, 3)]
    for n, data in enumerate(blobs):
        storage.put_stream(f"b/vol-{n}", Dribble(data, step=MiB))
    with (
        storage.open_read("b/vol-0") as first,
        storage.open_read("b/vol-1") as second,
        storage.open_read("b/vol-2") as third,
    ):
        for body, data in zip((first, second, third), blobs, strict=True):
            assert body.read() == data
            assert storage._ranges.peak <= 2 * PART
    assert storage._ranges.held == 0


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize("fault", ["500", "reset-response", "stall"])
def test_a_range_that_fails_or_stalls_is_fetched_again_alone(
    fault_proxy: FaultProxy, seaweedfs_server: S3Server, fault: Fault
) -> None:
    storage = storage_at(fault_proxy.endpoint_url, seaweedfs_server.new_bucket())
    data = os.urandom(4 * PART + 77)
    storage.put_stream(KEY, Dribble(data, step=MiB))
    second = f"bytes={PART}-{2 * PART - 1}"

    def second_range(request: Request) -> bool:
        return request.operation == "GetObject" and request.headers.get("range") == second

    fault_proxy.inject(1.0, seed=1, limit=1, kinds=(fault,), stall=STALL, match=second_range)
    with storage.open_read(KEY) as body:
        assert body.read() == data
    assert fault_proxy.faults() == [fault]
    asked = ranges_asked(fault_proxy, KEY)
    # Every range once, the faulted one twice; never the whole object.
    assert sorted(asked) == sorted([*part_ranges(len(data)), second])


@pytest.mark.usefixtures("fast_backoff")
def test_a_range_failing_beyond_the_budget_is_one_clear_error(
    fault_proxy: FaultProxy, seaweedfs_server: S3Server
) -> None:
    bucket = seaweedfs_server.new_bucket()
    storage = storage_at(fault_proxy.endpoint_url, bucket, retry_budget=1.0)
    data = os.urandom(3 * PART)
    storage.put_stream(KEY, Dribble(data, step=MiB))

    def last_range(request: Request) -> bool:
        return request.headers.get("range", "").startswith(f"bytes={2 * PART}-")

    fault_proxy.inject(1.0, seed=1, limit=1000, kinds=("500",), match=last_range)
    with pytest.raises(StorageError) as failed, storage.open_read(KEY) as body:
        body.read()
    message = str(failed.value)
    assert message.startswith(
        f"download of s3://{bucket}/{KEY} failed: InternalError: We encountered an internal "
        "error.; gave up after "
    )
    assert message.endswith(
        " s; nothing was changed; run the same command again once the endpoint answers"
    )
    # The ranges that could be read were read once each.
    assert ranges_asked(fault_proxy, KEY).count(f"bytes=0-{PART - 1}") == 1
    assert storage._ranges.held == 0


def test_an_object_replaced_while_it_is_read_is_refused(s3_server: S3Server) -> None:
    """Every range asks for the ETag the object had when it was opened: a new object under
    the key fails the read instead of splicing its bytes into the old one's."""
    storage = storage_at(s3_server.endpoint_url, s3_server.new_bucket(), concurrency=1)
    storage.put_stream(KEY, Dribble(os.urandom(3 * PART), step=MiB))
    with storage.open_read(KEY) as body:
        storage.put_stream(KEY, Dribble(os.urandom(3 * PART), step=MiB))
        with pytest.raises(StorageError, match="the object was replaced while it was read"):
            body.read()


def test_a_checksum_failure_of_a_whole_object_is_a_storage_error(
    moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object of one range is asked for whole, so botocore checks its SHA-256 at the end
    of the body; a mismatch reaches the user as one line."""
    storage = storage_at(moto_server.endpoint_url, moto_server.new_bucket())
    storage.put_bytes("h/manifest.json", b"{}")
    real = storage._client.get_object

    class Broken:
        def __init__(self, body: Any) -> None:
            self.body = body

        def readinto(self, view: memoryview) -> int:
            raise FlexibleChecksumError(error_msg="Expected checksum X did not match")

        def close(self) -> None:
            self.body.close()

    def get_object(**kwargs: Any) -> Any:
        assert "Range" not in kwargs and kwargs["ChecksumMode"] == "ENABLED"
        response = real(**kwargs)
        return {**response, "Body": Broken(response["Body"])}

    monkeypatch.setattr(storage._client, "get_object", get_object)
    with pytest.raises(StorageError, match="failed: Expected checksum X did not match"):
        storage.get_bytes("h/manifest.json")

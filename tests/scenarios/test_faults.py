"""Network faults between btrsendd and S3: ridden out within the retry budget, reported beyond it.

A loopback proxy (``tests/fixtures/faultproxy.py``) in front of SeaweedFS answers a seeded
fraction of requests with 5xx errors, resets connections mid-request or mid-response, stalls
responses past the client's read timeout, or refuses connections altogether.  Requests must be
retried with backoff until they succeed; an outage longer than the budget must fail the cycle
with one line naming the endpoint's error, and the next cycle must resume.  The S3 client is
made impatient for these tests (second-long timeouts and budgets) so faults cost seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

from btrsendd.errors import StorageError
from btrsendd.storage.retry import equal_jitter, retry_call
from btrsendd.storage.s3 import bucket as s3mod
from btrsendd.storage.s3.bucket import S3Storage
from btrsendd.storage.s3.upload import MiB
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.faultproxy import ALL_FAULTS, Fault, FaultProxy
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.storage.helpers import Dribble, client_error
from tests.support.backups import events
from tests.support.consistency import (
    assert_catalog_matches_bucket,
    open_uploads,
    restore_and_compare,
)
from tests.support.faults import change_source
from tests.support.impatient import impatient_s3
from tests.support.trees import populate
from tests.support.world import World, make_world

PART = 5 * MiB
#: The impatient client's connect and read timeout; stalls last longer than this.
TIMEOUT = 1.0
STALL = 2.0
#: The impatient client's retry budget in the end-to-end tests.
BUDGET = 3.0
#: How every message of a request that ran out of retries ends.
RESUMES = "; an interrupted backup resumes from its last stored volume at the next cycle"


# -- the retry loop itself -----------------------------------------------------------------


class FakeTime:
    """A clock that only moves when slept on (or when told to), for exact timing tests."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    fake = FakeTime()
    failures = iter(range(8))

    def flaky() -> str:
        if next(failures, None) is not None:
            raise ConnectionResetError
        return "done"

    result = retry_call(
        flaky,
        retryable=lambda exc: True,
        base_delay=1,
        max_delay=8,
        jitter=equal_jitter,
        sleep=fake.sleep,
        clock=fake.clock,
    )
    assert result == "done"
    nominal = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(n / 2 <= s <= n for n, s in zip(nominal, fake.slept, strict=True)), fake.slept


def test_budget_stops_retrying_at_its_end_and_says_how_long_it_tried() -> None:
    fake = FakeTime()
    retries: list[tuple[int, float]] = []

    def down() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError, match="refused") as info:
        retry_call(
            down,
            retryable=lambda exc: True,
            base_delay=1,
            budget=10,
            on_retry=lambda exc, attempt, delay: retries.append((attempt, delay)),
            sleep=fake.sleep,
            clock=fake.clock,
        )
    # 1 + 2 + 4 s, then the 8 s wait is cut to what is left, for a last try at the very end.
    assert fake.slept == [1, 2, 4, 3]
    assert retries == [(1, 1), (2, 2), (3, 4), (4, 3)]
    assert info.value.__notes__ == ["gave up after 5 attempts in 10 s"]


# -- the S3 backend behind the proxy ---------------------------------------------------------


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "UPLOAD_RETRY_DELAY", 0.05)
    monkeypatch.setattr(s3mod, "RETRY_MAX_DELAY", 0.5)


@pytest.fixture
def bucket(seaweedfs_server: S3Server) -> str:
    return seaweedfs_server.new_bucket()


def behind(proxy: FaultProxy, bucket: str, budget: float = 30.0) -> S3Storage:
    """An S3Storage that talks to SeaweedFS through the proxy, with an impatient client."""
    return S3Storage(
        bucket,
        endpoint_url=proxy.endpoint_url,
        storage_class="STANDARD",
        part_size=PART,
        retry_budget=budget,
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
    )


@pytest.mark.usefixtures("fast_backoff")
def test_every_kind_of_request_rides_out_every_kind_of_fault(
    fault_proxy: FaultProxy, seaweedfs_server: S3Server, bucket: str
) -> None:
    storage = behind(fault_proxy, bucket)
    fault_proxy.inject(0.3, seed=5, limit=60, stall=STALL)
    data = os.urandom(3 * PART + 12345)
    for n in range(3):
        storage.put_stream(f"v/{n}/big", Dribble(data, step=MiB))
        storage.put_bytes(f"v/{n}/small", b"manifest %d" % n)
        with storage.open_read(f"v/{n}/big") as body:
            assert body.read() == data
        assert storage.get_bytes(f"v/{n}/small") == b"manifest %d" % n
        assert storage.thaw_state(f"v/{n}/big") == "readable"
    assert len({o.key for o in storage.list("v/")}) == 6
    storage.delete([o.key for o in storage.list("v/")])
    assert list(storage.list("v/")) == []
    assert set(fault_proxy.faults()) == set(ALL_FAULTS)
    assert open_uploads(seaweedfs_server.client(), bucket) == []


def _is(operation: str) -> Callable[[Request], bool]:
    return lambda request: request.operation == operation


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize("fault", ["reset-response", "stall"])
@pytest.mark.parametrize(
    "operation",
    ["CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject", "GetObject"],
)
def test_lost_answers_are_retried_without_leaving_anything_behind(
    fault_proxy: FaultProxy, seaweedfs_server: S3Server, bucket: str, operation: str, fault: Fault
) -> None:
    """The server did the work but the answer never arrived: the retry must cope with that.

    A second create opens a second upload (the first must be aborted, not billed forever); a
    second complete finds the upload gone (the object is there: done); a download cut short
    continues with a ranged GET.
    """
    storage = behind(fault_proxy, bucket)
    data = os.urandom(3 * PART + 1)
    small = os.urandom(1000)
    fault_proxy.inject(1.0, seed=1, limit=1, kinds=(fault,), stall=STALL, match=_is(operation))
    storage.put_stream("vol", Dribble(data, step=MiB))
    storage.put_bytes("small", small)
    with storage.open_read("vol") as body:
        assert body.read() == data
    assert storage.get_bytes("small") == small
    assert fault_proxy.faults() == [fault]
    assert [e.operation for e in fault_proxy.exchanges].count(operation) >= 2
    assert open_uploads(seaweedfs_server.client(), bucket) == []


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize("completed", [True, False])
def test_a_retried_complete_that_finds_the_upload_gone_checks_the_object(
    moto_server: S3Server, monkeypatch: pytest.MonkeyPatch, completed: bool
) -> None:
    """AWS may answer a retried CompleteMultipartUpload with NoSuchUpload when the first one
    succeeded unseen (SeaweedFS and moto answer 200 again, so the answer is made up here):
    the object, whole, means done; no object means the upload really is gone."""
    storage = S3Storage(
        moto_server.new_bucket(),
        endpoint_url=moto_server.endpoint_url,
        storage_class="STANDARD",
        part_size=PART,
    )
    real_complete = storage._client.complete_multipart_upload
    calls = 0

    def complete(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            if completed:
                real_complete(**kwargs)
            raise ConnectionClosedError(endpoint_url=moto_server.endpoint_url)
        raise client_error("NoSuchUpload", 404, "CompleteMultipartUpload")

    monkeypatch.setattr(storage._client, "complete_multipart_upload", complete)
    data = os.urandom(2 * PART)
    if completed:
        storage.put_stream("vol", Dribble(data, step=MiB))
        assert storage.get_bytes("vol") == data
    else:
        with pytest.raises(StorageError, match=r"failed: NoSuchUpload: injected NoSuchUpload$"):
            storage.put_stream("vol", Dribble(data, step=MiB))
    assert calls == 2


@pytest.mark.usefixtures("fast_backoff")
def test_an_outage_shorter_than_the_budget_is_ridden_out(
    fault_proxy: FaultProxy, bucket: str
) -> None:
    storage = behind(fault_proxy, bucket, budget=30)
    data = os.urandom(2 * PART)
    fault_proxy.down_for(2.0)
    started = time.monotonic()
    storage.put_stream("vol", Dribble(data, step=MiB))
    assert time.monotonic() - started >= 2.0
    with storage.open_read("vol") as body:
        assert body.read() == data


@pytest.mark.usefixtures("fast_backoff")
def test_an_outage_longer_than_the_budget_names_the_connection_error(
    fault_proxy: FaultProxy, bucket: str
) -> None:
    storage = behind(fault_proxy, bucket, budget=2)
    fault_proxy.down()
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.put_bytes("data/b/manifest.json", b"{}")
    assert 2 <= time.monotonic() - started < 2 + 2 * TIMEOUT
    message = str(info.value)
    assert message.startswith(f"upload of s3://{bucket}/data/b/manifest.json failed: ")
    assert f"cannot reach {fault_proxy.endpoint_url}: Could not connect" in message
    assert message.endswith(" attempts in 2 s" + RESUMES)


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("500", "InternalError: We encountered an internal error."),
        ("503", "SlowDown: Please reduce your request rate."),
    ],
)
def test_5xx_beyond_the_budget_reports_the_endpoints_code_and_message(
    fault_proxy: FaultProxy, bucket: str, fault: Fault, said: str
) -> None:
    storage = behind(fault_proxy, bucket, budget=1)
    fault_proxy.inject(1.0, seed=1, limit=1000, kinds=(fault,))
    with pytest.raises(StorageError, match="gave up after") as info:
        list(storage.list("data/"))
    assert f"listing s3://{bucket}/data/ failed: {said}; gave up after" in str(info.value)


# -- whole backups through the CLI -------------------------------------------------------------


@pytest.fixture
def world(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path, fault_proxy: FaultProxy, bucket: str
) -> World:
    """A source of ~23 MiB (three 8 MiB volumes of two parts each) backed up through the proxy."""
    storage = (
        f'backend = "s3"\nbucket = "{bucket}"\nendpoint_url = "{fault_proxy.endpoint_url}"\n'
        'storage_class = "STANDARD"'
    )
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, storage)
    w.pipeline = 'compression = "zstd"\nvolume_size = "8MiB"\npart_size = "5MiB"'
    w.schedule = f"backup_days = {list(range(1, 32))}\nmax_incrementals = 2"
    populate(w.source, big=20 * MiB)
    impatient_s3(w, budget=BUDGET, timeout=TIMEOUT)
    return w


def test_backups_of_several_days_complete_and_restore_through_faults(
    world: World,
    fault_proxy: FaultProxy,
    seaweedfs_server: S3Server,
    bucket: str,
    make_btrfs: MakeBtrfs,
) -> None:
    fault_proxy.inject(0.2, seed=3, limit=50, stall=STALL)
    days = ["2000-01-01", "2000-01-02", "2000-01-03", "2000-01-04"]
    retries = []
    for n, day in enumerate(days):
        if n:
            change_source(world, n, 10 * MiB)
        retries += events(world.run("backup", "--date", day), "storage.retrying")
    backups = assert_catalog_matches_bucket(world, seaweedfs_server.client(), bucket)
    assert [b["kind"] for b in backups] == ["full", "incremental", "incremental", "full"]
    assert all(b["volumes"] >= 2 for b in backups)
    # The newest backup of each chain, through the faults too.
    target = make_btrfs("dst")
    for day in ("2000-01-03", "2000-01-04"):
        restore_and_compare(world, target, day)
    faults = fault_proxy.faults()
    assert len(retries) >= 5 and len(faults) >= 10 and set(faults) == set(ALL_FAULTS), faults


def run_in_background(world: World, *args: str) -> Callable[[], CompletedProcess[bytes]]:
    """Start ``world.run(*args)`` on a thread; returns a function that waits for its result."""
    result: list[CompletedProcess[bytes]] = []
    thread = threading.Thread(target=lambda: result.append(world.run(*args, check=False)))
    thread.start()

    def wait() -> CompletedProcess[bytes]:
        thread.join(120)
        assert result, "btrsendd did not finish within 120 s"
        return result[0]

    return wait


@pytest.mark.parametrize("stored", [0, 2])
def test_an_outage_longer_than_the_budget_fails_cleanly_and_the_next_cycle_resumes(
    world: World,
    fault_proxy: FaultProxy,
    seaweedfs_server: S3Server,
    bucket: str,
    make_btrfs: MakeBtrfs,
    stored: int,
) -> None:
    # The endpoint goes away in the middle of volume `stored`'s multipart upload.
    hold = fault_proxy.hold(
        lambda r: (
            r.operation == "UploadPart"
            and r.query["partNumber"] == ["2"]
            and r.key.endswith(f"/vol-{stored:05d}.btrfs.zst.gpg")
        )
    )
    finished = run_in_background(world, "backup", "--date", "2000-01-01")
    hold.wait(60)
    fault_proxy.down()
    hold.release()
    failed = finished()

    assert failed.returncode == 1
    errors = [line for line in failed.stderr.decode().splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("btrsendd: error: data: upload of s3://")
    assert f"cannot reach {fault_proxy.endpoint_url}: " in errors[0]
    assert "; gave up after " in errors[0]
    assert errors[0].endswith(RESUMES)
    assert events(failed, "storage.retrying")
    [partial] = world.list()
    assert (partial["state"], partial["volumes"]) == ("uploading", stored)

    fault_proxy.up()
    resumed = world.run("backup", "--date", "2000-01-01")
    [event] = events(resumed, "backup.resumed")
    assert event["volumes_skipped"] == stored and event["bytes_saved"] == stored * 8 * MiB
    [done] = assert_catalog_matches_bucket(world, seaweedfs_server.client(), bucket)
    assert done["id"] == partial["id"] and done["volumes"] == 3
    restore_and_compare(world, make_btrfs("dst"), "2000-01-01")

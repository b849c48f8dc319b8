"""The rate limit's pacing (``storage/throttle.py``): one limit shared by every thread, a
request body paid for once however often botocore reads it, reads paced, and no limit
costing nothing."""

from __future__ import annotations

import io
import threading
import time

import pytest

from btrsendd.storage.throttle import MAX_SLICE, TOLERANCE, PacedBody, Throttle

MiB = 1024**2


def timed(action: object) -> float:
    assert callable(action)
    started = time.monotonic()
    action()
    return time.monotonic() - started


def test_threads_share_one_limit() -> None:
    # Four threads moving 256 KiB each at 1 MiB/s take a second together, not a quarter
    # of one each: the limit is on the sum, as for the parts of one upload.
    throttle = Throttle(MiB)

    def move() -> None:
        for _ in range(4):
            throttle.take(64 * 1024)

    def all_four() -> None:
        threads = [threading.Thread(target=move) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    elapsed = timed(all_four)
    assert 1.0 - TOLERANCE <= elapsed < 1.4


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    throttle = Throttle(MiB)
    throttle.take(MiB // 10)
    time.sleep(0.5)
    # Half a second of idling buys nothing: the next 512 KiB still take half a second.
    elapsed = timed(lambda: [throttle.take(64 * 1024) for _ in range(8)])
    assert elapsed >= 0.5 - TOLERANCE


def test_a_body_is_paid_for_once_however_often_it_is_read() -> None:
    # botocore hashes a body for the signature (plain HTTP), seeks back, then sends it.
    data = bytearray(b"x" * (MiB // 2))
    body = PacedBody(data, Throttle(MiB))

    def hash_then_send() -> None:
        assert body.read() == data
        assert body.seek(0) == 0
        assert body.read() == data

    elapsed = timed(hash_then_send)
    assert 0.5 - TOLERANCE <= elapsed < 0.8
    # botocore learns the length by seeking to the end.
    assert body.seek(0, io.SEEK_END) == len(data) and body.tell() == len(data)
    # The part's buffer can be resized for the next part while the body still exists.
    del data[10:]


def test_reads_are_paced_in_slices() -> None:
    throttle = Throttle(MiB)
    reader = throttle.reader(io.BytesIO(b"y" * MiB))
    assert len(reader.read(10 * MiB)) <= MAX_SLICE  # one slice at a time
    elapsed = timed(lambda: reader.read())
    assert elapsed >= (MiB - MAX_SLICE) / MiB - TOLERANCE


def test_writes_are_paced_in_slices() -> None:
    throttle = Throttle(2 * MiB)
    out = io.BytesIO()
    elapsed = timed(lambda: throttle.write(out.write, b"z" * MiB))
    assert out.getvalue() == b"z" * MiB
    assert 0.5 - TOLERANCE <= elapsed < 0.8


def test_no_limit_changes_nothing() -> None:
    throttle = Throttle(None)
    data = bytearray(16)
    raw = io.BytesIO(b"abc")
    assert throttle.body(data) is data
    assert throttle.reader(raw) is raw
    assert timed(lambda: throttle.take(10**12)) < 0.1


def test_a_slow_limit_paces_small_slices() -> None:
    # A tenth of a second's worth: a stop is never long behind a sleep.
    assert Throttle(10 * 1024).slice == 1024
    assert Throttle(100 * 1024).slice == 10 * 1024
    assert Throttle(100 * MiB).slice == MAX_SLICE
    with pytest.raises(ValueError):
        Throttle(0)

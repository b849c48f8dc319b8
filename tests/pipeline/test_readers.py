"""Readers: a pipe whose end means its producers succeeded, and streams read without copies."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

import pytest

from btrsendd.pipeline.readers import PipeReader, Tap, readinto_of, sha256_of
from tests.pipeline.support import MiB, random_data


class ReadOnly:
    """A stream with ``read`` alone (the ``Readable`` protocol's minimum)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(size)


def pipe_of(*pieces: bytes, pause: float = 0.1) -> int:
    """The read end of a pipe that a thread writes ``pieces`` into, ``pause`` apart."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(pause)
            os.write(write_fd, piece)
        os.close(write_fd)

    threading.Thread(target=write, daemon=True).start()
    return read_fd


def test_read_returns_what_was_asked_for_and_ends_after_finish() -> None:
    finished: list[bool] = []
    reader = PipeReader(pipe_of(b"abc", b"defgh"), lambda: finished.append(True), digest=True)
    assert reader.read(4) == b"abcd"  # waits for the second piece, as a buffered file would
    assert reader.read(100) == b"efgh"
    assert finished == [True] and reader.at_eof
    assert reader.read() == b""
    assert finished == [True]  # checked once
    assert (reader.size, reader.sha256) == (8, hashlib.sha256(b"abcdefgh").hexdigest())


def test_readinto1_returns_what_has_arrived() -> None:
    reader = PipeReader(pipe_of(b"abc", b"defgh", pause=0.5), lambda: None, digest=False)
    buffer = bytearray(10)
    assert reader.readinto1(buffer) == 3 and buffer[:3] == b"abc"
    assert reader.readinto(buffer) == 5 and buffer[:5] == b"defgh"
    assert reader.readinto(buffer) == 0 and reader.at_eof


def test_a_failed_producer_is_raised_instead_of_the_end_and_stays_raised() -> None:
    def finish() -> None:
        raise RuntimeError("the producer failed")

    reader = PipeReader(pipe_of(b"abc"), finish, digest=False)
    assert reader.read(3) == b"abc"
    with pytest.raises(RuntimeError, match="the producer failed"):
        reader.read(3)
    assert isinstance(reader.error, RuntimeError) and not reader.at_eof
    with pytest.raises(RuntimeError, match="the producer failed"):
        reader.readinto(bytearray(3))


def test_readinto_of_copies_only_where_it_must() -> None:
    buffer = bytearray(5)
    assert readinto_of(ReadOnly(b"abcdefg"))(memoryview(buffer)) == 5 and buffer == b"abcde"
    stream = io.BytesIO(b"xyz")
    assert readinto_of(stream) == stream.readinto


@pytest.mark.parametrize("source", [io.BytesIO, ReadOnly])
def test_sha256_of(source: type) -> None:
    data = random_data(3 * MiB + 1)
    assert sha256_of(source(data)) == hashlib.sha256(data).hexdigest()


def test_tap_shows_every_byte_and_ends_once_at_the_end() -> None:
    seen = bytearray()
    ends: list[int] = []
    tap = Tap(io.BytesIO(b"abcdef"), seen.extend, lambda: ends.append(len(seen)))
    assert tap.read(0) == b""  # asking for nothing is not the end
    assert tap.read(2) == b"ab"
    buffer = bytearray(3)
    assert tap.readinto1(buffer) == 3 and buffer == b"cde"
    assert tap.readinto(buffer) == 1 and buffer[:1] == b"f"
    assert ends == []
    assert tap.read(5) == b""
    assert (bytes(seen), ends) == (b"abcdef", [6])


def test_tap_raises_what_the_watcher_raises() -> None:
    def refuse(data: memoryview | bytes) -> None:
        raise ValueError("not this")

    with pytest.raises(ValueError, match="not this"):
        Tap(ReadOnly(b"abc"), refuse, lambda: None).readinto(bytearray(2))

"""The send-stream checker on real streams from real ``btrfs send``, whole and damaged.

Real streams (protocol 1, and 2 where the kernel and btrfs-progs can make it) are the ground
truth: the checker must pass every one of them however it is cut into chunks, read the
identity ``btrfs subvolume show`` would name, and refuse every truncation, every bit flip it
can see, and every input that is not one stream of one subvolume.  Hand-made streams
(``tests/sendstreams.py``) cover what ``btrfs send`` does not make on its own: other
versions, unknown commands, malformed first commands.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import struct
import subprocess
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import btrfsutil
import crc32c
import pytest

from btrsendd.model import StreamIdentity
from btrsendd.pipeline.expected_stream import ExpectedStream
from btrsendd.pipeline.sendstream import (
    COMMAND_HEADER,
    MAGIC,
    STREAM_HEADER,
    SUBVOL,
    StreamChecker,
    StreamError,
    checked,
)
from tests.fixtures.btrfs import loop_btrfs, make_subvolume
from tests.support import sendstreams as ss
from tests.support.trees import mutate, populate

MiB = 1 << 20


@dataclass(frozen=True)
class Sent:
    """Streams of one source: snapshots ``s1`` and ``s2`` (changed) and their identities."""

    streams: dict[str, bytes]
    s1: StreamIdentity
    s2: StreamIdentity
    #: Whether this machine's btrfs can send protocol version 2.
    proto2: bool


def _send(*args: str) -> bytes:
    return subprocess.run(["btrfs", "-q", "send", *args], check=True, capture_output=True).stdout


def _identity(path: Path, name: str) -> StreamIdentity:
    info = btrfsutil.subvolume_info(path)
    return StreamIdentity(1, name, bytes(info.uuid).hex(), info.ctransid)


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    """Real streams, made once for the module: full and incremental, protocols 1 and 2,
    a tiny one, and streams of two subvolumes at once."""
    work = tmp_path_factory.mktemp("sendstream")
    with loop_btrfs(work) as fs:
        src = make_subvolume(fs / "src")
        populate(src)
        subprocess.run(["cp", "--reflink=always", src / "bin.dat", src / "clone.dat"], check=True)
        s1, s2, tiny = fs / "s1", fs / "s2", fs / "tiny"
        btrfsutil.create_snapshot(src, s1, read_only=True)
        mutate(src, 1)
        (src / "clone.dat").unlink()
        btrfsutil.create_snapshot(src, s2, read_only=True)
        make_subvolume(fs / "tiny-src")
        (fs / "tiny-src" / "f").write_text("tiny\n")
        btrfsutil.create_snapshot(fs / "tiny-src", tiny, read_only=True)
        streams = {
            "full": _send(str(s1)),
            "incremental": _send("-p", str(s1), str(s2)),
            "tiny": _send(str(tiny)),
            "two subvolumes": _send(str(s1), str(tiny)),
            "two subvolumes, -e": _send("-e", str(s1), str(tiny)),
        }
        proto2 = subprocess.run(["btrfs", "-q", "send", "--proto", "2", str(tiny)],
                                capture_output=True).returncode == 0  # fmt: skip
        if proto2:
            streams["full v2"] = _send("--proto", "2", str(s1))
            streams["incremental v2"] = _send("--proto", "2", "-p", str(s1), str(s2))
            streams["tiny v2"] = _send("--proto", "2", str(tiny))
        yield Sent(streams, _identity(s1, "s1"), _identity(s2, "s2"), proto2)


def _protocols(sent: Sent) -> list[str]:
    return ["", " v2"] if sent.proto2 else [""]


def check(data: bytes, chunk: int = MiB) -> StreamIdentity:
    checker = StreamChecker()
    for start in range(0, len(data), chunk):
        checker.feed(data[start : start + chunk])
    return checker.finish()


def refused(data: bytes, chunk: int = MiB) -> str:
    """The message the checker refuses ``data`` with, fed in ``chunk``s then finished."""
    with pytest.raises(StreamError) as caught:
        check(data, chunk)
    return str(caught.value)


# -- the format, as btrfs writes it -----------------------------------------------------------


def test_checksums_are_crc32c_with_seed_0_and_no_final_inversion(sent: Sent) -> None:
    for kind in ("full", "incremental", *(["full v2"] if sent.proto2 else [])):
        data = sent.streams[kind]
        for pos, length, _, stored in ss.commands(data):
            unsigned = data[pos : pos + 6] + bytes(4) + data[pos + 10 : pos + 10 + length]
            assert ss.crc(unsigned) == stored
            assert crc32c.crc32c(unsigned) != stored  # the usual CRC-32C is not it


def test_hand_made_streams_are_valid_to_btrfs_itself(tmp_path: Path) -> None:
    synthetic = b"".join(ss.synthetic(3 * MiB, os.urandom(MiB)))
    assert 3 * MiB - ss.WRITE_SIZE < len(synthetic) <= 3 * MiB
    for data in (ss.small_stream(), synthetic):
        dumped = subprocess.run(
            ["btrfs", "receive", "--dump"], input=data, capture_output=True, check=True
        ).stdout.decode()
        assert dumped.startswith("subvol") and "write" in dumped


# -- real streams pass --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [MiB, 65536, 4096, COMMAND_HEADER, 7, 3])
def test_real_streams_pass_however_they_are_cut(sent: Sent, chunk: int) -> None:
    for suffix in _protocols(sent):
        assert check(sent.streams["full" + suffix], chunk).uuid == sent.s1.uuid
        assert check(sent.streams["incremental" + suffix], chunk).uuid == sent.s2.uuid


def test_real_streams_pass_byte_by_byte_and_in_random_pieces(sent: Sent) -> None:
    rng = random.Random(1)
    for suffix in _protocols(sent):
        check(sent.streams["tiny" + suffix], 1)
        data = sent.streams["full" + suffix]
        checker, pos = StreamChecker(), 0
        while pos < len(data):
            step = rng.choice((1, 2, 9, 10, 11, 17, 100, 4095, 70000))
            checker.feed(memoryview(data)[pos : pos + step])
            pos += step
        assert checker.finish().uuid == sent.s1.uuid
        assert checker.size == len(data)


def test_the_identity_is_what_btrfs_names_the_snapshots(sent: Sent) -> None:
    for suffix in _protocols(sent):
        version = 2 if suffix else 1
        full = check(sent.streams["full" + suffix])
        incremental = check(sent.streams["incremental" + suffix])
        assert full == StreamIdentity(version, "s1", sent.s1.uuid, sent.s1.ctransid)
        assert incremental == StreamIdentity(
            version, "s2", sent.s2.uuid, sent.s2.ctransid, sent.s1.uuid, sent.s1.ctransid
        )
        assert incremental.continues(full)
        assert not full.continues(incremental)


def test_the_identity_is_known_once_the_first_command_is_read(sent: Sent) -> None:
    data = sent.streams["incremental"]
    [(_, length, _, _), *_] = ss.commands(data)
    first_end = STREAM_HEADER + COMMAND_HEADER + length
    seen: list[StreamIdentity] = []
    checker = StreamChecker(expect=seen.append)
    checker.feed(data[: first_end - 1])
    assert checker.identity is None and seen == []
    checker.feed(data[first_end - 1 : first_end])
    assert checker.identity is not None and seen == [checker.identity]
    assert checker.identity.parent_uuid == sent.s1.uuid


# -- damage is refused --------------------------------------------------------------------


def test_a_stream_cut_anywhere_is_refused_with_where(sent: Sent) -> None:
    data = sent.streams["full"]
    found = ss.commands(data)
    assert refused(data[:5]) == "the send stream ends in its header at byte 5 (truncated?)"
    for pos, length, _, _ in found:
        assert refused(data[:pos]) == (
            f"the send stream ends at byte {pos} without its END command (truncated?)"
        )
        inside = [pos + 4] + ([pos + COMMAND_HEADER, pos + COMMAND_HEADER + length // 2]
                              if length >= 2 else [])  # fmt: skip
        for cut in inside:
            assert refused(data[:cut], 4096) == (
                f"the send stream ends in the middle of a command at byte {cut} (truncated?)"
            )
    end_at = found[-1][0]
    assert data[end_at:] == ss.end()
    assert "without its END command" in refused(data[:end_at])


def test_every_bit_flip_but_one_in_the_version_is_refused(sent: Sent) -> None:
    """Exhaustively, on a real stream: each flipped bit is refused, by the magic, the version,
    the framing or a checksum, and never with anything but a StreamError.

    The one flip that passes turns version 1 into version 3: the header has no checksum, and
    every version 1 command is also a version 3 command.  (The stored volumes' SHA-256
    sums, checked at restore, are what catch damage after a backup; this check is about
    what btrsendd is given.)
    """
    data = sent.streams["tiny"]
    passed = []
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with contextlib.suppress(StreamError):
            check(bytes(damaged), 4096)
            passed.append(bit)
    assert passed == [len(MAGIC) * 8 + 1]


def test_a_flipped_bit_in_a_large_payload_is_refused_at_its_command(sent: Sent) -> None:
    data = bytearray(sent.streams["full"])
    pos, length, _, _ = max(ss.commands(bytes(data)), key=lambda c: c[1])
    data[pos + COMMAND_HEADER + length - 1] ^= 0x10
    assert refused(bytes(data)) == (
        f"the send stream is damaged: the checksum of its WRITE command at byte {pos} does "
        "not match"
    )


def test_what_is_not_a_send_stream_says_what_it_is(sent: Sent) -> None:
    full = sent.streams["full"]
    assert refused(b"") == (
        "the send stream is empty: nothing was backed up (is the input a btrfs send stream?)"
    )
    assert "gzip-compressed data: decompress it first" in refused(gzip.compress(full))
    zstd = subprocess.run(["zstd", "-q", "-c"], input=full, capture_output=True, check=True)
    assert "zstd-compressed data: decompress it first" in refused(zstd.stdout)
    message = refused(random.Random(3).randbytes(3 * MiB))
    assert message.startswith("not a btrfs send stream (it starts with ")
    assert "expected the magic 'btrfs-stream'" in message
    assert refused(b"full stream " * 1000, 1) == (
        "not a btrfs send stream (it starts with 66; expected the magic 'btrfs-stream')"
    )


def test_anything_after_end_is_refused(sent: Sent) -> None:
    full = sent.streams["full"]
    assert refused(full + b"\n") == (
        f"the send stream goes on after its END command, at byte {len(full)} (something was "
        "appended?)"
    )
    assert refused(full + full) == (
        f"a second send stream begins after the END command, at byte {len(full)}; back up one "
        "subvolume per stream"
    )
    # btrfs send of two subvolumes: two whole streams, or (-e) one stream of both.
    assert "a second send stream begins after the END command" in refused(
        sent.streams["two subvolumes"]
    )
    message = refused(sent.streams["two subvolumes, -e"])
    assert message.startswith("the send stream holds more than one subvolume (another SUBVOL at")


# -- versions, commands and the first command ---------------------------------------------------


def test_versions_and_the_commands_each_one_knows() -> None:
    fallocate = ss.command(ss.FALLOCATE)
    verity = ss.command(26)
    body = ss.subvol() + ss.mkfile(b"f")
    check(ss.header(2) + body + fallocate + ss.end())
    check(ss.header(3) + body + fallocate + verity + ss.end())
    assert refused(ss.header(1) + body + fallocate + ss.end()) == (
        f"unknown command 23 at byte {STREAM_HEADER + len(body)} of a version 1 send stream "
        "(damaged, or not a send stream)"
    )
    assert "unknown command 26 at byte" in refused(ss.header(2) + body + verity + ss.end())
    assert "unknown command 27 at byte" in refused(ss.header(3) + body + ss.command(27))
    assert "unknown command 0 at byte" in refused(ss.header(1) + body + ss.command(0))
    for version in (0, 4, 0x01000000):
        assert refused(ss.header(version) + body + ss.end()) == (
            f"send stream version {version} at byte 13 is not one this btrsendd knows (1 to 3); "
            "upgrade btrsendd, or send with --proto 1"
        )


def test_the_stream_must_begin_with_one_well_formed_subvolume() -> None:
    assert refused(ss.header() + ss.mkfile(b"f") + ss.end()) == (
        "the send stream does not begin with a subvolume: its first command, at byte 17, is MKFILE"
    )
    no_uuid = ss.command(
        SUBVOL, ss.attribute(ss.A_PATH, b"x") + ss.attribute(ss.A_CTRANSID, ss.u64(1))
    )
    assert refused(ss.header() + no_uuid + ss.end()) == (
        "the send stream's SUBVOL command at byte 17 has no UUID (damaged?)"
    )
    short = ss.subvol(uuid=b"\x01" * 15)
    assert "has a UUID of 15 bytes, not 16" in refused(ss.header() + short + ss.end())
    overrun = ss.command(SUBVOL, ss.attribute(ss.A_PATH, b"x")[:-1])
    assert "attribute running past its end" in refused(ss.header() + overrun + ss.end())
    # A first command claiming more than such a command can hold is refused from its header,
    # without waiting for (or keeping) its payload.
    huge = struct.pack("<IHI", 1 << 30, SUBVOL, 0)
    assert refused(ss.header() + huge) == (
        "the send stream's SUBVOL command at byte 17 claims 1073741824 bytes, more than such "
        "a command can hold (damaged?)"
    )


def test_from_version_2_data_has_no_length_and_runs_to_the_end() -> None:
    trailing = ss.attribute(ss.A_PATH, b"x") + ss.attribute(ss.A_UUID, ss.UUID)
    trailing += ss.attribute(ss.A_CTRANSID, ss.u64(5)) + struct.pack("<H", ss.A_DATA) + b"abc"
    stream = ss.header(2) + ss.command(SUBVOL, trailing) + ss.end()
    assert check(stream) == StreamIdentity(2, "x", ss.UUID.hex(), 5)
    # The same bytes as version 1: DATA's "length" is the next two bytes, far too many.
    assert "attribute running past its end" in refused(b"".join((ss.header(1), stream[17:])))


# -- what the planner expected --------------------------------------------------------------


def test_expected_refuses_the_stream_at_its_first_command(sent: Sent) -> None:
    checker = StreamChecker(ExpectedStream("full"))
    data = sent.streams["incremental"]
    with pytest.raises(StreamError, match="a full backup was due"):
        checker.feed(data[:4096])


# -- the wrapper, and memory ----------------------------------------------------------------


class _ReadOnly:
    """A stream with ``read`` alone (the ``Readable`` protocol's minimum)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(size)


@pytest.mark.parametrize("method", ["read", "readinto", "readinto1"])
@pytest.mark.parametrize("source", [io.BytesIO, _ReadOnly])
def test_checked_passes_the_bytes_and_fails_at_eof(sent: Sent, method: str, source: type) -> None:
    def drain(data: bytes) -> bytes:
        stream = checked(source(data), StreamChecker())
        assert stream.read(0) == b""  # asking for nothing is not the end
        out = bytearray()
        while True:
            if method == "read":
                piece = stream.read(65536)
            else:
                buffer = bytearray(65536)
                piece = bytes(buffer[: getattr(stream, method)(buffer)])
            if not piece:
                return bytes(out)
            out += piece

    data = sent.streams["full"]
    assert drain(data) == data
    with pytest.raises(StreamError, match="ends in the middle of a command"):
        drain(data[:-3])
    with pytest.raises(StreamError, match="goes on after its END command"):
        drain(data + b"x")


def test_memory_stays_flat_however_long_the_stream() -> None:
    pattern = random.Random(5).randbytes(MiB)
    checker = StreamChecker()
    pieces = list(ss.synthetic(256 * MiB, pattern))  # the same block, over and over
    tracemalloc.start()
    try:
        for piece in pieces:
            view = memoryview(piece)
            for start in range(0, len(view), MiB):
                checker.feed(view[start : start + MiB])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert checker.finish().name == "2024-01-01"
    assert checker.size > 255 * MiB
    assert peak < 64 * 1024, f"the checker held {peak} bytes"

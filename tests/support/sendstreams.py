"""btrfs send streams made by hand: valid ones, for where a real ``btrfs send`` is too costly
or cannot say what a test needs, and exact damage.

Written from the format as ``btrfs-progs`` reads it (``kernel-shared/send.h``,
``common/send-stream.c``); ``test_sendstream.py`` has ``btrfs receive --dump`` parse what this
module builds, so the tests do not merely agree with themselves.  The benchmark's synthetic
stream (``bench/stream.py``) is built here too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import crc32c

from btrsendd.pipeline.sendstream import COMMAND_HEADER, END, MAGIC, SNAPSHOT, STREAM_HEADER, SUBVOL

# Command and attribute numbers (``BTRFS_SEND_C_*``, ``BTRFS_SEND_A_*``).
MKFILE, WRITE, FALLOCATE = 3, 15, 23
A_UUID, A_CTRANSID, A_INO, A_PATH, A_FILE_OFFSET, A_DATA = 1, 2, 3, 15, 18, 19
A_CLONE_UUID, A_CLONE_CTRANSID = 20, 21

#: What ``btrfs send`` puts in one WRITE in a version 1 stream (``BTRFS_SEND_READ_SIZE``).
WRITE_SIZE = 48 * 1024

UUID = bytes(range(16))
PARENT_UUID = bytes(range(16, 32))


def crc(data: bytes) -> int:
    """The kernel's CRC-32C: seed 0, no final inversion."""
    return int(crc32c.crc32c(data, 0xFFFFFFFF)) ^ 0xFFFFFFFF


def header(version: int = 1) -> bytes:
    return MAGIC + struct.pack("<I", version)


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("<HH", kind, len(value)) + value


def command(number: int, payload: bytes = b"") -> bytes:
    """One command with a correct checksum."""
    unsigned = struct.pack("<IHI", len(payload), number, 0) + payload
    return struct.pack("<IHI", len(payload), number, crc(unsigned)) + payload


def subvol(name: bytes = b"2000-01-01", uuid: bytes = UUID, ctransid: int = 7) -> bytes:
    return command(
        SUBVOL,
        attribute(A_PATH, name) + attribute(A_UUID, uuid) + attribute(A_CTRANSID, u64(ctransid)),
    )


def snapshot(
    name: bytes = b"2000-01-07",
    uuid: bytes = UUID,
    ctransid: int = 9,
    parent_uuid: bytes = PARENT_UUID,
    parent_ctransid: int = 7,
) -> bytes:
    payload = attribute(A_PATH, name) + attribute(A_UUID, uuid)
    payload += attribute(A_CTRANSID, u64(ctransid)) + attribute(A_CLONE_UUID, parent_uuid)
    payload += attribute(A_CLONE_CTRANSID, u64(parent_ctransid))
    return command(SNAPSHOT, payload)


def mkfile(path: bytes, ino: int = 257) -> bytes:
    return command(MKFILE, attribute(A_PATH, path) + attribute(A_INO, u64(ino)))


def write(path: bytes, offset: int, data: bytes) -> bytes:
    """A version 1 WRITE (the DATA attribute with its length)."""
    return command(
        WRITE,
        attribute(A_PATH, path) + attribute(A_FILE_OFFSET, u64(offset)) + attribute(A_DATA, data),
    )


def end() -> bytes:
    return command(END)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def small_stream(data: bytes = b"hello\n" * 100) -> bytes:
    """A complete full stream of one file: ``btrfs receive`` creates it."""
    return header() + subvol() + mkfile(b"f") + write(b"f", 0, data) + end()


def synthetic(size: int, pattern: bytes, name: bytes = b"2024-01-01") -> Iterator[bytes]:
    """A valid full stream of about ``size`` bytes (within one command) that writes
    ``pattern`` into one file over and over, in pieces of ``WRITE_SIZE``.

    Every repetition writes the same offsets, so its commands are the same bytes: they are
    built (and checksummed) once, and the stream costs no more to make than to copy.
    """
    first = header() + subvol(name) + mkfile(b"data")
    yield first
    pieces = [
        write(b"data", offset, pattern[offset : offset + WRITE_SIZE])
        for offset in range(0, len(pattern), WRITE_SIZE)
    ]
    block = b"".join(pieces)
    left = size - len(first) - len(end())
    while left >= len(block):
        yield block
        left -= len(block)
    for piece in pieces:
        if len(piece) > left:
            break
        yield piece
        left -= len(piece)
    yield end()


def commands(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, payload length, command, stored checksum) of each command of a whole stream,
    read without the checker."""
    found, pos = [], STREAM_HEADER
    while pos < len(data):
        length, number, stored = struct.unpack_from("<IHI", data, pos)
        found.append((pos, length, number, stored))
        pos += COMMAND_HEADER + length
    return found

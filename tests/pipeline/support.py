"""What the pipeline tests share: test data, a codec as the backup host has it, an in-memory
``store_volume``, and a check that no program the pipeline started is left behind."""

from __future__ import annotations

import hashlib
import io
import os
import random
import sys
from pathlib import Path

from btrsendd.model import Volume
from btrsendd.pipeline.codec import Codec, Compression, DecodedVolume, decode_volume
from btrsendd.storage.base import Readable, Stored
from tests.fixtures.gpg import GpgKey

MiB = 1024 * 1024


def random_data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def compressible_data(size: int) -> bytes:
    lines = b"".join(
        b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(size // 50 + 1)
    )
    return lines[:size]


# 3.5 MiB: three full 1 MiB volumes and a short last one.
DATA = {"random": random_data(7 * MiB // 2), "compressible": compressible_data(7 * MiB // 2)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codec_for(compression: Compression, key: GpgKey | None, level: int | None = None) -> Codec:
    """A codec as the backup host has it: encrypting to public keys only."""
    return Codec(
        compression=compression,
        level=level if level is not None else (3 if compression == "zstd" else 6),
        recipients=(key.fingerprint,) if key else (),
        gnupg_home=key.public_home if key else None,
    )


class MemoryStore:
    """A ``store_volume`` that keeps volumes in memory.

    It reads in pieces that match neither the volume nor the pipeline's chunk size, as a
    multipart upload would, and only keeps a volume it read to the end.
    """

    def __init__(self, read_size: int = 300_000) -> None:
        self.read_size = read_size
        self.volumes: dict[int, bytes] = {}

    def __call__(self, index: int, stream: Readable) -> Stored:
        pieces = []
        while piece := stream.read(self.read_size):
            pieces.append(piece)
        self.volumes[index] = b"".join(pieces)
        return Stored(len(self.volumes[index]), f"mem-{index}")


def decode_all(store: MemoryStore, results: list[Volume], codec: Codec, home: Path | None) -> bytes:
    """Decode every volume, checking what decoding saw against what encoding recorded."""
    out = io.BytesIO()
    for vol in results:
        got = decode_volume(io.BytesIO(store.volumes[vol.index]), codec, out, gnupg_home=home)
        assert got == DecodedVolume(
            vol.stored_size, vol.stored_sha256, vol.raw_length, vol.raw_sha256
        )
    return out.getvalue()


#: What the pipeline starts; other children (session-scoped S3 servers) are not its leaks.
PIPELINE_PROGRAMS = {"btrfs", "gzip", "pigz", "zstd", "gpg"}


def child_processes(programs: set[str] = PIPELINE_PROGRAMS) -> list[str]:
    """This process's children running one of ``programs``, zombies included: what a leak
    would leave behind."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        comm_end = text.rindex(")")
        state, ppid = text[comm_end + 2 :].split()[:2]
        name = text[text.index("(") + 1 : comm_end]
        if int(ppid) == me and name in programs:
            found.append(f"{stat.parent.name} {name} {state}")
    return found


def python_command(code: str) -> list[str]:
    """A stand-in for ``btrfs send`` (or any stage) whose behaviour a test controls exactly."""
    return [sys.executable, "-c", code]

"""A synthetic send stream of any length on stdout, for runs where a real one is too costly.

``python -m bench.stream SIZE KIND SEED`` writes SIZE bytes (``8GiB`` and the like):

* ``sparse``: every MiB is 128 KiB of random bytes then 896 KiB of zeros, like the send stream
  of a mostly empty disk image.  zstd shrinks it about eightfold at several hundred MiB/s, so
  an 8 GiB stream takes seconds, while btrsendd still reads, hashes and splits every byte:
  the stream that shows whether memory stays flat as the stream grows.
* ``random``: incompressible bytes, for upload runs without compression.

Both repeat a 64 MiB pattern built from SEED; no compressor used here keeps a window that
large, and hashing and uploading do not care.
"""

from __future__ import annotations

import os
import random
import sys

from bench.dataset import MiB, parse_size

PATTERN = 64 * MiB


def pattern(kind: str, seed: int) -> bytes:
    """The 64 MiB block the stream repeats."""
    rng = random.Random(seed)
    if kind == "random":
        return b"".join(rng.randbytes(MiB) for _ in range(PATTERN // MiB))
    if kind == "sparse":
        return b"".join(
            rng.randbytes(MiB // 8) + bytes(MiB - MiB // 8) for _ in range(PATTERN // MiB)
        )
    raise ValueError(f"unknown stream kind {kind!r}: random or sparse")


def write(size: int, kind: str, seed: int, fd: int) -> None:
    view = memoryview(pattern(kind, seed))
    left = size
    while left > 0:
        chunk = view[: min(left, len(view))]
        while chunk:
            chunk = chunk[os.write(fd, chunk) :]
        left -= min(left, len(view))


if __name__ == "__main__":
    size_text, kind, seed_text = sys.argv[1:]
    write(parse_size(size_text), kind, int(seed_text), sys.stdout.fileno())

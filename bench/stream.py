"""A synthetic send stream of any length on stdout, for runs where a real one is too costly.

``python -m bench.stream SIZE KIND SEED`` writes a valid btrfs send stream of SIZE bytes
(``8GiB`` and the like; within one 48 KiB command): a SUBVOL, then WRITE commands that fill
one file with a pattern over and over, then END.  btrsendd checks every stream it stores, so
the stream must be a real one, checksums and all (``tests/sendstreams.synthetic`` builds it;
``btrfs receive --dump`` accepts it).  The pattern is:

* ``sparse``: every MiB is 128 KiB of random bytes then 896 KiB of zeros, like the send stream
  of a mostly empty disk image.  zstd shrinks it about eightfold at several hundred MiB/s, so
  an 8 GiB stream takes seconds, while btrsendd still reads, hashes, checks and splits every
  byte: the stream that shows whether memory stays flat as the stream grows.
* ``random``: incompressible bytes, for upload runs without compression.

Both repeat a 64 MiB pattern built from SEED; no compressor used here keeps a window that
large, and hashing and uploading do not care.  Each repetition is the same commands, built
once, so the producer costs no more than copying.
"""

from __future__ import annotations

import os
import random
import sys

from bench.dataset import MiB, parse_size
from tests.support.sendstreams import synthetic

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
    for piece in synthetic(size, pattern(kind, seed)):
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]


if __name__ == "__main__":
    size_text, kind, seed_text = sys.argv[1:]
    write(parse_size(size_text), kind, int(seed_text), sys.stdout.fileno())

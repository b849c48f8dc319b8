"""The SHA-256 tree hash, against AWS's documented algorithm written out the plain way.

The reference below keeps every chunk digest in a list and reduces it level by level, exactly
as the Glacier developer guide describes; the implementation under test folds a binary counter
of subtrees instead, and is fed in pieces that straddle chunk boundaries.  botocore's own
implementation is a third opinion.  Sizes are the edges: nothing, one byte, one chunk, one
chunk and a byte, an odd number of chunks, and just under 1 GiB.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator

import pytest
from botocore.utils import calculate_tree_hash

from btrsendd.storage.vault.treehash import CHUNK, TreeHasher, combine, tree_hash

MiB = 1024**2
GiB = 1024**3


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


_BASE = random.Random(7).randbytes(MiB)


def chunks_of(size: int) -> Iterator[bytes]:
    """``size`` reproducible bytes in 1 MiB chunks, each one different (its number leads),
    generated on the fly so that 1 GiB is never in memory."""
    for number, start in enumerate(range(0, size, MiB)):
        n = min(MiB, size - start)
        yield (number.to_bytes(8, "big") + _BASE[8:])[:n]


def reference_tree_hash(chunks: Iterator[bytes]) -> str:
    """AWS's algorithm, literally: digest each 1 MiB chunk, then hash pairs level by level,
    carrying an unpaired last digest up; no data hashes as SHA-256 of nothing."""
    level = [h(chunk) for chunk in chunks]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                nxt.append(h(level[i] + level[i + 1]))
            else:
                nxt.append(level[i])
        level = nxt
    return level[0].hex()


def streamed(size: int, piece: int) -> str:
    """The implementation under test, fed in ``piece``-byte writes across chunk boundaries."""
    hasher = TreeHasher()
    pending = b""
    for chunk in chunks_of(size):
        pending += chunk
        while len(pending) >= piece:
            hasher.update(pending[:piece])
            pending = pending[piece:]
    hasher.update(pending)
    return hasher.hexdigest()


@pytest.mark.parametrize(
    "size",
    [0, 1, MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB, 7 * MiB, 7 * MiB + 12345],
    ids=lambda s: f"{s}B",
)
def test_matches_reference_on_edge_sizes(size: int) -> None:
    data = b"".join(chunks_of(size))
    expected = reference_tree_hash(chunks_of(size))
    assert tree_hash(data).hex() == expected
    assert streamed(size, 65_537) == expected
    assert streamed(size, 3 * MiB + 5) == expected
    assert calculate_tree_hash(io.BytesIO(data)) == expected


def test_one_gib_minus_one() -> None:
    size = GiB - 1
    expected = reference_tree_hash(chunks_of(size))
    assert streamed(size, 4 * MiB + 3) == expected


def test_known_values() -> None:
    # Nothing: AWS defines it as SHA-256 of the empty input (the FIPS 180 test vector).
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert tree_hash(b"").hex() == empty
    assert TreeHasher().hexdigest() == empty
    # Up to one chunk, the tree is a single leaf: plain SHA-256 ("abc" is FIPS 180's vector).
    assert (
        tree_hash(b"abc").hex()
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    one_chunk = bytes(range(256)) * (CHUNK // 256)
    assert tree_hash(one_chunk) == h(one_chunk)
    # A chunk and a byte: two leaves, one parent.
    assert tree_hash(one_chunk + b"x") == h(h(one_chunk) + h(b"x"))
    # Seven chunks: ((01)(23))((45)6), the seventh carried up a level unpaired.
    parts = [bytes([n]) * CHUNK for n in range(7)]
    d = [h(p) for p in parts]
    expected = h(h(h(d[0] + d[1]) + h(d[2] + d[3])) + h(h(d[4] + d[5]) + d[6]))
    assert tree_hash(b"".join(parts)) == expected


def test_power_of_two_pieces_combine_into_the_whole() -> None:
    """What uploads and downloads rely on: aligned pieces' hashes combine to the whole's."""
    data = b"".join(chunks_of(11 * MiB + 77))
    for piece in (MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB):
        digests = [tree_hash(data[i : i + piece]) for i in range(0, len(data), piece)]
        assert combine(digests) == tree_hash(data), piece


def test_digest_leaves_the_hasher_usable() -> None:
    hasher = TreeHasher()
    hasher.update(b"a" * (MiB + 3))
    assert hasher.digest() == tree_hash(b"a" * (MiB + 3))
    hasher.update(b"b" * MiB)
    assert hasher.digest() == tree_hash(b"a" * (MiB + 3) + b"b" * MiB)

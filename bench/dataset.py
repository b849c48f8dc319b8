"""A reproducible dataset that looks like what people back up, built from a fixed seed.

Throughput depends on what is in the stream: gzip crawls through text and code but flies over
zeros, zstd is fast on everything, and ``btrfs send`` itself pays per file as well as per byte.
A benchmark on random bytes alone (or zeros alone) would flatter or punish the wrong stage, so
the dataset mixes the kinds of data real subvolumes hold, in fixed shares of ``size``:

========== ====== ==================================================================
kind       share  content
========== ====== ==================================================================
media      30 %   already-compressed data (photos, video, archives): random bytes
docs       20 %   text and logs: sentences from a seeded vocabulary, ~3x compressible
bin        15 %   binaries: code-like token soup with string tables and padding
small      15 %   many small files (256 B - 32 KiB), half text, half binary
vm         10 %   sparse disk images: 1 MiB of data every 4 MiB, holes between
db         10 %   zero-filled, preallocated files (written zeros, not holes)
========== ====== ==================================================================

Every byte comes from ``random.Random(seed)``, so the same seed and size give the same files
(and therefore the same send stream size) on any machine.  ``change_day`` applies one day of
edits (appends, in-place rewrites, new and deleted files, a rename) for the incremental.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

#: Files are written in pieces of this size, so building the dataset needs little memory.
PIECE = MiB

#: Shares of ``size`` by kind; ``vm`` counts the data written into the images, not holes.
SHARES = {"media": 0.30, "docs": 0.20, "bin": 0.15, "small": 0.15, "vm": 0.10, "db": 0.10}

#: Sparse images are this many times larger than the data written into them.
SPARSE_FACTOR = 4


class Content:
    """Seeded generators for each kind of file content, all yielding ``PIECE``-sized bytes.

    Text and code are cut from pools built once (13 MiB of sentences, a 19 MiB token
    corpus): generating them word by word would take minutes per GiB, and the pools are
    far larger than gzip's 32 KiB window and zstd's 2 MiB one at level 3, so repeats stay
    rare.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        words = [
            "".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 3, 3, 4)))) for _ in range(20_000)
        ]
        # Word frequencies follow Zipf's law, as in any natural text.
        zipf = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
        self._sentences = [
            " ".join(rng.choices(words, cum_weights=zipf, k=rng.randint(4, 18)))
            + rng.choice((".", ",", ";", f" {rng.randint(0, 99_999)}."))
            for _ in range(200_000)
        ]
        tokens = [rng.randbytes(rng.randint(2, 7)) for _ in range(3000)]
        token_weights = list(itertools.accumulate(1 / (rank + 1) ** 1.1 for rank in range(3000)))
        self._code = b"".join(rng.choices(tokens, cum_weights=token_weights, k=4 * MiB))

    def random(self, size: int) -> Iterator[bytes]:
        """Incompressible bytes: what photos, video and archives look like to a compressor."""
        for start in range(0, size, PIECE):
            yield self.rng.randbytes(min(PIECE, size - start))

    def text(self, size: int) -> Iterator[bytes]:
        """Lines of sentences, newline separated."""
        pending = size
        while pending > 0:
            want = min(PIECE, pending)
            # Sentences average ~60 bytes; ask for a few more lines than that needs.
            lines = self.rng.choices(self._sentences, k=want // 50 + 2)
            piece = ("\n".join(lines) + "\n").encode()[:want]
            pending -= len(piece)
            yield piece

    def binary(self, size: int) -> Iterator[bytes]:
        """Code-like bytes: runs of a token corpus, string tables, and zero padding to 4 KiB."""
        pending = size
        while pending > 0:
            parts: list[bytes] = []
            filled = 0
            while filled < PIECE:
                kind = self.rng.random()
                if kind < 0.7:
                    length = self.rng.randint(4 * KiB, 64 * KiB)
                    start = self.rng.randrange(len(self._code) - length)
                    part = self._code[start : start + length]
                elif kind < 0.9:
                    part = next(self.text(self.rng.randint(KiB, 16 * KiB)))
                else:
                    part = bytes(-filled % (4 * KiB) or 4 * KiB)
                parts.append(part)
                filled += len(part)
            piece = b"".join(parts)[: min(PIECE, pending)]
            pending -= len(piece)
            yield piece


def _write(path: Path, pieces: Iterator[bytes]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("wb") as f:
        for piece in pieces:
            f.write(piece)
            written += len(piece)
    return written


def _file_sizes(rng: random.Random, total: int, low: int, high: int) -> list[int]:
    """Sizes from ``low`` to ``high``, log-uniform (many small, few large), summing to ``total``."""
    sizes: list[int] = []
    while total > 0:
        size = min(total, int(low * (high / low) ** rng.random()))
        sizes.append(size)
        total -= size
    return sizes


@dataclass(frozen=True)
class DatasetInfo:
    """What was built, for the report."""

    files: int
    data_bytes: int
    apparent_bytes: int


def build(root: Path, size: int, seed: int) -> DatasetInfo:
    """Fill ``root`` (an empty directory, normally a subvolume) with about ``size`` bytes."""
    rng = random.Random(seed)
    content = Content(rng)
    shares = {kind: int(size * share) for kind, share in SHARES.items()}
    files = data = apparent = 0

    def add(path: Path, pieces: Iterator[bytes]) -> None:
        nonlocal files, data, apparent
        written = _write(path, pieces)
        files += 1
        data += written
        apparent += written

    for n, length in enumerate(_file_sizes(rng, shares["media"], 8 * MiB, 64 * MiB)):
        add(root / "media" / f"clip-{n:04d}.mp4", content.random(length))
    for n, length in enumerate(_file_sizes(rng, shares["docs"], 64 * KiB, 16 * MiB)):
        add(root / "docs" / f"doc-{n:04d}.log", content.text(length))
    for n, length in enumerate(_file_sizes(rng, shares["bin"], 256 * KiB, 16 * MiB)):
        add(root / "bin" / f"prog-{n:04d}", content.binary(length))
    for n, length in enumerate(_file_sizes(rng, shares["small"], 256, 32 * KiB)):
        pieces = content.text(length) if n % 2 else content.binary(length)
        add(root / "small" / f"d{n // 500:03d}" / f"f{n:06d}", pieces)
    for n, length in enumerate(_file_sizes(rng, shares["vm"], 16 * MiB, 128 * MiB)):
        path = root / "vm" / f"disk-{n:03d}.img"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(length * SPARSE_FACTOR)
            for island in range(0, length, MiB):
                f.seek(island * SPARSE_FACTOR)
                f.write(next(content.binary(min(MiB, length - island))))
        files += 1
        data += length
        apparent += length * SPARSE_FACTOR
    for n, length in enumerate(_file_sizes(rng, shares["db"], 16 * MiB, 128 * MiB)):
        zeros = bytes(PIECE)
        add(
            root / "db" / f"table-{n:03d}.db",
            (zeros[: min(PIECE, length - at)] for at in range(0, length, PIECE)),
        )
    return DatasetInfo(files=files, data_bytes=data, apparent_bytes=apparent)


def change_day(root: Path, size: int, seed: int) -> int:
    """One day of edits on a tree ``build`` made; returns the bytes written (about 5 % of
    ``size``).

    Appends to logs, rewrites ranges inside binaries, a new video, small files deleted, added
    and renamed: each kind of change ``btrfs send -p`` encodes differently.
    """
    rng = random.Random(seed + 1)
    content = Content(rng)
    written = 0
    for path in sorted((root / "docs").iterdir())[::3]:
        with path.open("ab") as f:
            for piece in content.text(64 * KiB):
                written += f.write(piece)
    for path in sorted((root / "bin").iterdir())[::5]:
        length = path.stat().st_size
        with path.open("r+b") as f:
            f.seek(rng.randrange(max(1, length - MiB)))
            for piece in content.binary(min(MiB, length)):
                written += f.write(piece)
    written += _write(root / "media" / "clip-new.mp4", content.random(max(MiB, size // 50)))
    small = sorted(p for d in sorted((root / "small").iterdir()) for p in d.iterdir())
    for path in small[::20]:
        path.unlink()
    for n, length in enumerate(_file_sizes(rng, size // 100, 256, 32 * KiB)):
        written += _write(root / "small" / "new" / f"f{n:06d}", content.text(length))
    directories = sorted((root / "small").iterdir())
    os.rename(directories[0], root / "small" / "renamed")
    return written


def parse_size(text: str) -> int:
    """``"3GiB"``, ``"512M"``, ``"1G"`` or plain bytes -> bytes (binary units throughout)."""
    units = {"k": KiB, "m": MiB, "g": GiB}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    if cleaned and cleaned[-1] in units:
        return int(float(cleaned[:-1]) * units[cleaned[-1]])
    return int(cleaned)

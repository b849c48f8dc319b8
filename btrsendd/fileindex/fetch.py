"""Reading only the volumes that hold some files' bytes, and handing each byte to its file.

A file's contents are pieces of backups' raw send streams (``entries.Piece``); the catalog
says which raw range each volume holds (``raw_offset``, ``raw_length``).  So the volumes a
set of files needs are known before anything is read: those whose range meets a piece's
(a piece may span two).  Each is read and decoded as ``receive.py`` does for ``btrfs receive``
(the next one fetched meanwhile; gpg, the decompressor, both SHA-256s checked against the
catalog, every byte), and as its
raw bytes go by, the parts that are some piece's go to a sink with the file and offset they
belong at.  Nothing holds a whole volume: the bytes pass in the codec's chunks.

A sink is written to before its volume's hashes are known (they are only at its end): a
volume that fails them fails the restore, and everything written must be thrown away.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from btrsendd.errors import OperationalError
from btrsendd.fileindex.entries import Piece
from btrsendd.fileindex.records import FileIndexError
from btrsendd.layout import Located
from btrsendd.log import get_logger
from btrsendd.progress import Progress, Total
from btrsendd.receive import Readers, decode_checked
from btrsendd.storage.base import Storage
from btrsendd.storage.throttle import UNLIMITED, Throttle

#: Where a piece's bytes go: ``sink(path, file_offset, data)``.
Sink = Callable[[str, int, memoryview], None]


@dataclass(frozen=True)
class Wanted:
    """A piece of the file at ``path`` to fetch (never a piece of zeros: nothing to read)."""

    path: str
    piece: Piece

    @property
    def start(self) -> int:
        return self.piece.stream_offset

    @property
    def end(self) -> int:
        return self.piece.stream_offset + self.piece.length


def wanted(files: Iterable[tuple[str, Sequence[Piece]]]) -> list[Wanted]:
    """The pieces of ``files`` (path and pieces) that live in some stream, in stream order."""
    found = [
        Wanted(path, piece)
        for path, pieces in files
        for piece in pieces
        if piece.backup_id is not None and piece.length > 0
    ]
    found.sort(key=lambda w: (w.piece.backup_id or "", w.start))
    return found


class _Volumes:
    """One chain's volumes by backup, in raw order, to find which hold a stream range."""

    def __init__(self, volumes: Sequence[Located]) -> None:
        self._by_backup: dict[str, list[Located]] = {}
        for vol in volumes:
            self._by_backup.setdefault(vol.backup.id, []).append(vol)
        for vols in self._by_backup.values():
            vols.sort(key=lambda v: v.volume.raw_offset)
        self._starts = {
            b: [v.volume.raw_offset for v in vols] for b, vols in self._by_backup.items()
        }

    def holding(self, want: Wanted) -> list[Located]:
        """The volumes holding ``want``'s bytes; a ``FileIndexError`` if some are in none."""
        backup = want.piece.backup_id
        assert backup is not None
        vols = self._by_backup.get(backup)
        if vols is None:
            raise FileIndexError(
                f"the file index puts {want.path!r}'s data in backup {backup}, which is not in "
                "the chain restored; the index is damaged or forged"
            )
        first = max(0, bisect.bisect_right(self._starts[backup], want.start) - 1)
        found: list[Located] = []
        covered = want.start
        for vol in vols[first:]:
            v = vol.volume
            if v.raw_offset >= want.end:
                break
            if v.raw_offset > covered:
                break  # a gap in the volumes: never in a stream btrsendd stored
            if v.raw_offset + v.raw_length > covered:
                found.append(vol)
                covered = v.raw_offset + v.raw_length
        if covered < want.end:
            raise FileIndexError(
                f"the file index puts {want.path!r}'s data at bytes {want.start}-{want.end} of "
                f"backup {backup}'s stream, which its volumes do not hold; the index is "
                "damaged or forged"
            )
        return found


@dataclass(frozen=True)
class VolumeWants:
    """A volume to read, and the wanted pieces whose bytes (some or all) it holds."""

    volume: Located
    wants: list[Wanted]


def needed_volumes(volumes: Sequence[Located], wants: Iterable[Wanted]) -> list[VolumeWants]:
    """The volumes of ``volumes`` (a chain's, in restore order) that hold ``wants``'s bytes,
    in that order, each with the pieces it holds."""
    chain = _Volumes(volumes)
    held: dict[str, list[Wanted]] = {}
    for want in wants:
        for vol in chain.holding(want):
            held.setdefault(vol.key, []).append(want)
    return [VolumeWants(vol, held[vol.key]) for vol in volumes if vol.key in held]


class _Router:
    """Sees one volume's raw bytes go by and hands the parts that are pieces to the sink."""

    def __init__(self, needed: VolumeWants, sink: Sink) -> None:
        # Last to start first: ``pop`` takes the next one to start.
        self._pending = sorted(needed.wants, key=lambda w: w.start, reverse=True)
        self._active: list[Wanted] = []
        self._position = needed.volume.volume.raw_offset
        self._sink = sink

    def __call__(self, chunk: memoryview) -> None:
        low, high = self._position, self._position + len(chunk)
        while self._pending and self._pending[-1].start < high:
            self._active.append(self._pending.pop())
        for want in self._active:
            begin, stop = max(want.start, low), min(want.end, high)
            if begin < stop:
                self._sink(
                    want.path,
                    want.piece.offset + begin - want.start,
                    chunk[begin - low : stop - low],
                )
        self._active = [w for w in self._active if w.end > high]
        self._position = high


def fetch(
    storage: Storage,
    needed: Sequence[VolumeWants],
    sink: Sink,
    *,
    gnupg_home: Path | None,
    throttle: Throttle = UNLIMITED,
) -> None:
    """Decode each volume of ``needed`` and give ``sink`` every byte of its pieces; an
    ``OperationalError`` names the volume that failed."""
    if not needed:
        return
    newest = needed[-1].volume.backup
    with (
        Progress(
            f"{newest.source} {newest.date}",
            get_logger(source=newest.source),
            event="restore.progress",
            total=Total(sum(n.volume.volume.raw_length for n in needed)),
            volumes=len(needed),
        ) as progress,
        open(os.devnull, "wb") as nowhere,
        closing(Readers(storage, [n.volume for n in needed], throttle)) as readers,
    ):
        for index, each in enumerate(needed):
            progress.next_volume()
            route = _Router(each, sink)

            def inspect(chunk: memoryview, route: _Router = route) -> None:
                route(chunk)
                progress.advance(len(chunk))

            try:
                # The decoded bytes are only inspected: the pieces leave by the sink.
                decode_checked(readers, index, nowhere, gnupg_home, inspect)
            except OperationalError as exc:
                raise OperationalError(
                    f"restore of {each.volume.describe()} failed: {exc}"
                ) from None

"""A file's contents as a sorted list of pieces, and the edits a send stream makes to it.

Kept as a plain list of ``entries.Piece`` (sorted by offset, never overlapping) so that an
``Entry`` is a tuple of the same objects, and edited in place with ``bisect``: a stream mostly
appends (a new file's WRITEs come in file order), which is one ``append``; an overwrite in the
middle of a large file replaces a slice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from btrsendd.fileindex.entries import Piece

Pieces = list[Piece]


def _offset(piece: Piece) -> int:
    return piece.offset


def _part(piece: Piece, start: int, end: int) -> Piece:
    """The part of ``piece`` in ``[start, end)`` (which it covers)."""
    if start == piece.offset and end == piece.offset + piece.length:
        return piece
    if piece.backup_id is None or piece.unrestorable is not None:
        # Zeros have no place in a stream; encoded bytes do not map linearly to the file.
        at = piece.stream_offset
    else:
        at = piece.stream_offset + (start - piece.offset)
    return Piece(start, end - start, piece.backup_id, at, piece.unrestorable)


def _span(pieces: Pieces, start: int, end: int) -> tuple[int, int]:
    """The slice ``[i, j)`` of ``pieces`` overlapping ``[start, end)``."""
    i = bisect_right(pieces, start, key=_offset)
    if i and pieces[i - 1].offset + pieces[i - 1].length > start:
        i -= 1
    j = bisect_left(pieces, end, key=_offset, lo=i)
    return i, j


def replace(pieces: Pieces, start: int, end: int, new: Pieces) -> None:
    """Make ``[start, end)`` hold exactly ``new`` (pieces within that range, sorted; the rest
    of the range becomes a hole)."""
    if start >= end:
        return
    if not pieces or pieces[-1].offset + pieces[-1].length <= start:
        pieces.extend(new)
        return
    i, j = _span(pieces, start, end)
    keep: Pieces = []
    if i < j and pieces[i].offset < start:
        keep.append(_part(pieces[i], pieces[i].offset, start))
    keep.extend(new)
    if i < j:
        last = pieces[j - 1]
        if last.offset + last.length > end:
            keep.append(_part(last, end, last.offset + last.length))
    pieces[i:j] = keep


def copy(pieces: Pieces, start: int, end: int, to: int) -> Pieces:
    """The pieces of ``[start, end)``, moved to begin at ``to`` (a clone's source range)."""
    if start >= end:
        return []
    i, j = _span(pieces, start, end)
    moved: Pieces = []
    shift = to - start
    for piece in pieces[i:j]:
        part = _part(piece, max(start, piece.offset), min(end, piece.offset + piece.length))
        moved.append(
            Piece(
                part.offset + shift,
                part.length,
                part.backup_id,
                part.stream_offset,
                part.unrestorable,
            )
        )
    return moved


def allocate(pieces: Pieces, start: int, end: int) -> None:
    """Fill the holes of ``[start, end)`` with zeros (``fallocate`` mode 0: data stays)."""
    if start >= end:
        return
    i, j = _span(pieces, start, end)
    filled: Pieces = []
    at = start
    for piece in pieces[i:j]:
        if piece.offset > at:
            filled.append(Piece(at, piece.offset - at, None))
        filled.append(piece)
        at = max(at, piece.offset + piece.length)
    if at < end:
        filled.append(Piece(at, end - at, None))
    pieces[i:j] = filled


def cut(pieces: Pieces, size: int) -> None:
    """Drop everything from ``size`` on (a truncate that shrinks)."""
    if not pieces or pieces[-1].offset + pieces[-1].length <= size:
        return
    i, _ = _span(pieces, size, size + 1)
    if i < len(pieces) and pieces[i].offset < size:
        pieces[i:] = [_part(pieces[i], pieces[i].offset, size)]
    else:
        del pieces[i:]

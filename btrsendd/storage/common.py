"""Helpers every backend shares: key rules and bounded reads from a stream.

They live here, not in each backend, so that a key accepted by one backend is accepted by all
(a backup written to a directory can be copied to a bucket and back) and so that "how much of
the stream is in memory" has one answer.
"""

from __future__ import annotations

from btrsendd.errors import StorageError
from btrsendd.storage.base import Lock, Readable

#: How much one ``read()`` call asks for.  Reading a large block in small calls keeps the
#: transient copy a single call makes (a pipe's ``read(n)`` allocates ``n`` bytes) small next
#: to the block being filled.
READ_CHUNK = 1024 * 1024


def refuse_lock(lock: Lock | None, description: str) -> None:
    """Fail a write asked to lock what this storage cannot lock, rather than store it unlocked.

    The configuration refuses ``object_lock`` for such backends, so this is a last guard: an
    unlocked copy where a locked one was asked for would look protected and not be.
    """
    if lock is not None:
        raise StorageError(f"{description} cannot lock objects; object_lock needs backend s3")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ``ValueError``.

    Keys are built by btrsendd itself (``layout.py``), so a bad one is a bug, not a user
    error.  The rules are those of the strictest backend, the local directory: no absolute
    keys, no ``.``/``..`` or empty segments (they would escape or alias paths), no NUL.
    """
    if not key or key.startswith("/") or "\0" in key:
        raise ValueError(f"invalid object key {key!r}: must be relative and non-empty")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}: empty, '.' or '..' path segment")
    return key


def fill(stream: Readable, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; returns the bytes placed, fewer only at its end.

    Pipes return short reads long before they end, so one read is not enough to tell "end of
    stream" from "the writer is slow".  A stream with ``readinto`` (the pipeline's output)
    fills the view in place, with no copy in Python and no allocation; others are read in
    ``READ_CHUNK`` pieces, so memory held is the view plus at most one ``READ_CHUNK``.
    """
    readinto = getattr(stream, "readinto", None)
    filled = 0
    while filled < len(view):
        if readinto is not None:
            count = readinto(view[filled:])
        else:
            chunk = stream.read(min(len(view) - filled, READ_CHUNK))
            count = len(chunk)
            view[filled : filled + count] = chunk
        if not count:
            break
        filled += count
    return filled


def read_block(stream: Readable, size: int) -> bytearray:
    """Read exactly ``size`` bytes from ``stream``, or fewer only at end of stream."""
    block = bytearray(size)
    del block[fill(stream, memoryview(block)) :]
    return block

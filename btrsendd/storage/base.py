"""The one small interface every storage backend implements.

Backends know nothing about backups: they store, fetch, list and delete objects by key, and
for cold classes they thaw objects on request.  Everything about what the keys mean lives in
``backup.py``, ``manifest.py`` and ``restore.py`` (the restic pattern: a tiny backend
interface, one module per backend).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol

Tier = Literal["Bulk", "Standard", "Expedited"]
ThawState = Literal["readable", "pending", "archived"]


class Readable(Protocol):
    """Anything with ``read(n)``: a pipe, a file, a hashing wrapper around either."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Stored:
    """What storing a stream produced: its size and the backend's own checksum of it.

    ``checksum`` is whatever the backend can later report for free (a HEAD request on S3),
    in the backend's own form, or ``None`` if it keeps none; ``verify`` compares the two so
    that damage is found without paying for a retrieval.
    """

    size: int
    checksum: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    storage_class: str = "STANDARD"


class Storage(Protocol):
    """Object storage as btrsendd needs it."""

    #: A short description for messages and logs, e.g. ``s3://bucket/prefix``.
    description: str

    def put_stream(self, key: str, stream: Readable) -> Stored:
        """Store everything ``stream`` yields under ``key`` in the configured (cold) class.

        Streams of any length with bounded memory; returns the bytes stored and the
        backend's checksum of them.  On
        any failure nothing is left under ``key`` (multipart uploads are aborted, temporary
        files removed) and ``StorageError`` is raised.
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object (a manifest) in an immediately readable class, atomically."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a small, immediately readable object (a manifest)."""
        ...

    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]:
        """Open a stored object for streaming reads; ``NotThawedError`` if still archived."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; keys that do not exist are not an error (deletion is retried)."""
        ...

    def thaw_state(self, key: str) -> ThawState:
        """Whether ``key`` can be read now, is being restored, or needs a restore request."""
        ...

    def request_thaw(self, key: str, tier: Tier, days: int) -> None:
        """Ask for an archived object to be made readable; idempotent."""
        ...

    def checksum(self, key: str) -> str | None:
        """The checksum the backend reports for ``key`` now, without a retrieval, in the form
        ``put_stream`` returned it; None if the backend keeps none (or the object has none)."""
        ...


def same_checksum(recorded: str, reported: str | None) -> bool:
    """Whether a checksum reported now is the one ``put_stream`` recorded.

    S3 appends the part count to a multipart object's checksum (``…-3``) and some
    S3-compatible servers (moto) leave it off; the digest alone decides.  A multipart
    checksum is a digest of part digests, so it never equals a whole-object digest.
    """
    if reported is None:
        return False
    return recorded.rpartition("-")[0] == reported or recorded == reported

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
class ObjectInfo:
    key: str
    size: int
    storage_class: str = "STANDARD"


class Storage(Protocol):
    """Object storage as btrsendd needs it."""

    #: A short description for messages and logs, e.g. ``s3://bucket/prefix``.
    description: str

    def put_stream(self, key: str, stream: Readable) -> int:
        """Store everything ``stream`` yields under ``key`` in the configured (cold) class.

        Streams of any length with bounded memory; returns the number of bytes stored.  On
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

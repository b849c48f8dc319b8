"""What a storage backend is: the interface every one implements, the capabilities some have,
and what the registry knows of a backend before it is opened.

Backends know nothing about backups: they store, fetch, list and delete objects by key, and
for cold classes they thaw objects on request.  Everything about what the keys mean lives in
``layout.py``, ``manifest.py`` and the engine (the restic pattern: a small backend interface,
one package per backend).

What only some backends can do is a Protocol of its own, checked with ``isinstance``, so that
mypy sees every call and no caller probes for methods by name or branches on a backend's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol, runtime_checkable

from btrsendd.storage.throttle import UNLIMITED, Throttle

if TYPE_CHECKING:
    from btrsendd.config import PipelineConfig, SourceConfig, StorageConfig
    from btrsendd.findings import Finding

Tier = Literal["Bulk", "Standard", "Expedited"]
ThawState = Literal["readable", "pending", "archived"]
#: What finding damage costs nothing on a backend: reading every object again (``rehash``,
#: a directory), comparing the checksum it reports without a retrieval (``checksum``, S3's
#: HEAD), or only the sizes a listing gives (``size``, a vault).
FreeCheck = Literal["rehash", "checksum", "size"]
#: S3 Object Lock's modes: GOVERNANCE can be lifted by someone allowed to bypass it,
#: COMPLIANCE by nobody, not even the account's root user, until it ends.
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


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
    #: The version the backend gave the object, on a bucket that keeps versions: what restore
    #: reads and expiry deletes, so that a later write under the same key changes neither.
    version: str | None = None


@dataclass(frozen=True)
class Lock:
    """An object's retention: it cannot be deleted or overwritten in place before ``until``."""

    mode: LockMode
    until: datetime


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    storage_class: str = "STANDARD"


class Storage(Protocol):
    """Object storage as btrsendd needs it: what every backend does."""

    #: A short description for messages and logs, e.g. ``s3://bucket/prefix``.
    description: str
    #: Whether ``put_stream(..., readable=True)`` stores an object that reads back at once
    #: whatever ``storage_class`` is (a file index); a Glacier vault archives everything.
    has_readable_class: bool

    @property
    def storage_class(self) -> str:
        """The class volumes are recorded in, as restore prices and ``status`` costs know it
        (``local``, ``GLACIER_VAULT``, or the S3 class volumes are stored in)."""
        ...

    @property
    def free_check(self) -> FreeCheck:
        """How stored volumes can be checked without paying for a retrieval."""
        ...

    def put_stream(
        self, key: str, stream: Readable, lock: Lock | None = None, *, readable: bool = False
    ) -> Stored:
        """Store everything ``stream`` yields under ``key`` in the configured (cold) class,
        or with ``readable`` in one that reads back without a thaw (STANDARD on S3).

        Streams of any length with bounded memory; returns the bytes stored and the
        backend's checksum of them.  On any failure nothing is left under ``key``
        (multipart uploads are aborted, temporary files removed) and ``StorageError`` is
        raised.  ``lock`` is only ever given to storage that is ``Locking``, ``readable``
        only to storage that ``has_readable_class``.
        """
        ...

    def put_bytes(self, key: str, data: bytes, lock: Lock | None = None) -> Stored:
        """Store a small object (a manifest) in an immediately readable class, atomically."""
        ...

    # ``version``: the one ``Stored.version`` named, or None for the current object; only
    # storage that is ``Versioned`` ever names one.

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        """Read a small, immediately readable object (a manifest)."""
        ...

    def open_read(
        self, key: str, version: str | None = None, *, throttle: Throttle = UNLIMITED
    ) -> AbstractContextManager[BinaryIO]:
        """Open a stored object for streaming reads; ``NotThawedError`` if still archived.

        Its bytes are paced by ``throttle`` as they arrive.  Remote backends fetch it as
        concurrent ranges (``ranged.py``) within one memory budget for all the objects open
        at once: read objects in the order they were opened (or close the earlier first).
        """
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; keys that do not exist are not an error (deletion is retried)."""
        ...

    def checksum(self, key: str, version: str | None = None) -> str | None:
        """The checksum the backend reports for ``key`` now, without a retrieval, in the form
        ``put_stream`` returned it; None if the backend keeps none (or the object has none)."""
        ...


# -- capabilities some backends have -------------------------------------------------------


@runtime_checkable
class Thawing(Protocol):
    """Cold storage: objects that may need a restore request before they can be read."""

    def thaw_state(self, key: str, version: str | None = None) -> ThawState:
        """Whether ``key`` can be read now, is being restored, or needs a restore request."""
        ...

    def request_thaw(self, key: str, tier: Tier, days: int, version: str | None = None) -> None:
        """Ask for an archived object to be made readable for ``days``; idempotent."""
        ...

    def thaw_lifetime(self, days: int) -> timedelta:
        """How long a copy requested with ``days`` stays readable: a request older than this
        has no copy left to wait for, and is made again."""
        ...


@runtime_checkable
class IncompleteUploads(Protocol):
    """Storage where an interrupted upload leaves something behind (an open multipart upload
    that is billed, a temporary file that takes space) until it is cleaned up."""

    def incomplete_uploads(self, prefix: str) -> Sequence[str]:
        """The keys of unfinished uploads under ``prefix`` (one per upload)."""
        ...

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Remove every unfinished upload under ``prefix``; returns how many there were."""
        ...


@runtime_checkable
class AccessCheck(Protocol):
    """Remote storage that can say at once whether it exists and lets us in."""

    def check_access(self) -> None:
        """Raise ``StorageError``, with advice, if the storage is missing or refuses us."""
        ...


@runtime_checkable
class IndexRebuild(Protocol):
    """Storage whose keys live in a local index (a vault's archives have none of their own)
    that can be rebuilt from the storage itself, slowly."""

    def rebuild_index(
        self, wait: bool, *, poll_seconds: float = ..., timeout: float | None = None
    ) -> bool:
        """Rebuild the index; True once done, False while the storage still prepares it
        (without ``wait``)."""
        ...


@dataclass(frozen=True)
class Version:
    """One version of an object in a bucket that keeps versions, or a delete marker."""

    key: str
    version: str
    size: int
    latest: bool
    delete_marker: bool = False
    storage_class: str = "STANDARD"
    modified: datetime | None = None


@runtime_checkable
class Versioned(Protocol):
    """Storage that can keep every version of an object (an S3 bucket with versioning on).

    There a delete without a version only hides the object behind a delete marker (still
    billed), and anyone with write access can add a newer version under a backup's key: so
    btrsendd reads and deletes the versions it wrote, by their ids.
    """

    def keeps_versions(self) -> bool:
        """Whether versioning is on (or was: a suspended bucket keeps what it has)."""
        ...

    def versions(self, prefix: str) -> Iterator[Version]:
        """Every version and delete marker of every key under ``prefix``, in key order."""
        ...

    def delete_versions(self, versions: Sequence[Version]) -> None:
        """Delete exactly these versions (and markers); ones already gone are no error."""
        ...


@runtime_checkable
class Locking(Protocol):
    """Storage that can lock object versions against deletion until a date (Object Lock)."""

    def lock_problem(self) -> str | None:
        """What keeps the storage from locking objects (no Object Lock on the bucket, no
        versioning), with how to fix it; None if it can."""
        ...

    def has_object_lock(self) -> bool:
        """Whether any version may be locked (the bucket has Object Lock), whatever the
        configuration says: locks set before, or by the bucket's default retention, hold."""
        ...

    def lock_of(self, key: str, version: str) -> Lock | None:
        """The retention ``version`` of ``key`` carries now, if any (none for a version that
        is gone: it holds nothing)."""
        ...

    def extend_lock(self, key: str, version: str | None, lock: Lock) -> None:
        """Set the retention of ``version`` (None: the current one) of ``key`` to ``lock``,
        which must not shorten it."""
        ...


class _AlwaysReadable:
    """``Thawing`` for storage that never archives: every object is readable now, forever."""

    def thaw_state(self, key: str, version: str | None = None) -> ThawState:
        return "readable"

    def request_thaw(self, key: str, tier: Tier, days: int, version: str | None = None) -> None:
        """Never called: nothing is ever archived."""

    def thaw_lifetime(self, days: int) -> timedelta:
        return timedelta.max


def thawing(storage: Storage) -> Thawing:
    """``storage`` as cold storage: itself if it thaws, else storage where all is readable."""
    return storage if isinstance(storage, Thawing) else _AlwaysReadable()


def same_checksum(recorded: str, reported: str | None) -> bool:
    """Whether a checksum reported now is the one ``put_stream`` recorded.

    S3 appends the part count to a multipart object's checksum (``…-3``) and some
    S3-compatible servers (moto) leave it off; the digest alone decides.  A multipart
    checksum is a digest of part digests, so it never equals a whole-object digest.
    """
    if reported is None:
        return False
    return recorded.rpartition("-")[0] == reported or recorded == reported


# -- what the registry knows of a backend --------------------------------------------------


@dataclass(frozen=True)
class MinimumDuration:
    """A minimum storage duration: deleting sooner is billed as if kept ``days``."""

    days: int
    #: What has the minimum, for messages: a storage class, or "Glacier vaults".
    where: str
    #: What a configuration must change besides ``storage_class`` to escape it, if anything
    #: (e.g. ``backend = "s3" with ``).
    switch: str = ""


class Backend(Protocol):
    """A backend as the registry knows it, before (and without) opening it.

    Each backend package provides one (its ``BACKEND``); nothing here opens a connection or
    imports an AWS library, so the configuration can be checked by every command for free.
    """

    #: ``storage.backend`` in the configuration file.
    name: str
    #: Whether ``storage.object_lock`` can be on: the storage it opens is ``Locking``.
    locks: bool

    def config_problem(self, cfg: StorageConfig) -> str | None:
        """What the ``[storage]`` section lacks for this backend, as a config error, or None."""
        ...

    def open(self, cfg: StorageConfig, pipeline: PipelineConfig, state_dir: Path | None) -> Storage:
        """The storage ``cfg`` describes (``state_dir`` for what a backend keeps locally);
        ``UsageError`` for a ``cfg`` that ``config_problem`` would refuse."""
        ...

    def findings(self, cfg: StorageConfig, sources: Sequence[SourceConfig]) -> list[Finding]:
        """``check-config``'s findings about this backend's settings on this machine."""
        ...

    def minimum_duration(self, cfg: StorageConfig) -> MinimumDuration | None:
        """The minimum storage duration volumes are billed for, if any."""
        ...

    def archive_directory(self, cfg: StorageConfig) -> Path | None:
        """The directory on this machine that holds the archive, if there is one: it must
        stay out of the sources and their snapshots (``placement.py``)."""
        ...

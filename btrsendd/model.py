"""What btrsendd keeps track of: backups, their volumes and chains, as plain data.

These are the nouns every layer shares (the catalog stores them, manifests carry them,
the planner decides on them, restore and verify read them); they know nothing about sqlite,
JSON or storage keys, which live in ``catalog.py``, ``manifest.py`` and ``layout.py``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

#: A backup's life: ``uploading`` (its row exists before its first byte is sent) ->
#: ``complete`` (its manifest is stored) -> ``expiring`` (being deleted) -> gone.
State = Literal["uploading", "complete", "expiring"]
Kind = Literal["full", "incremental"]


@dataclass(frozen=True)
class Volume:
    """One stored volume: ``name`` is the object's file name inside its backup's directory."""

    index: int
    name: str
    raw_offset: int
    raw_length: int
    raw_sha256: str
    stored_size: int
    stored_sha256: str
    #: The backend's checksum (``Stored.checksum``), which ``verify`` compares without a
    #: retrieval; None where the backend keeps none, or for volumes stored before btrsendd
    #: recorded it.
    stored_checksum: str | None = None
    #: The object's version (``Stored.version``) in a bucket that keeps versions: what
    #: restore reads, whatever was written under the key since.
    version: str | None = None


@dataclass(frozen=True)
class RestoreRequest:
    """A retrieval this host asked the storage for: which object, at which tier, when."""

    key: str
    backup_id: str
    tier: str
    requested_at: datetime


@dataclass(frozen=True)
class DeferredDeletion:
    """An object version of a deleted backup that was still locked when it was to go.

    The versions one deletion deferred form a ``batch``, deleted together (manifests first)
    once none of them is locked: until then the manifests left describe whole backups.
    """

    batch: str
    source: str
    key: str
    version: str
    size: int
    #: The latest lock seen on the batch; the storage's word decides when it is over.
    until: datetime
    delete_marker: bool = False


@dataclass(frozen=True)
class StreamIdentity:
    """What a backup's send stream says it is, read from its first command as it passed.

    ``uuid`` and ``ctransid`` name the subvolume that was sent (btrfs puts its received UUID
    there when it has one); an incremental's stream also names the subvolume it is relative
    to (``parent_uuid``, ``parent_ctransid``), which must be what its parent backup's stream
    named.  ``name`` is the subvolume name ``btrfs receive`` will create.
    """

    version: int
    name: str
    uuid: str
    ctransid: int
    parent_uuid: str | None = None
    parent_ctransid: int | None = None

    def continues(self, parent: StreamIdentity) -> bool:
        """Whether this (incremental) stream is relative to the subvolume ``parent`` sent."""
        return (self.parent_uuid, self.parent_ctransid) == (parent.uuid, parent.ctransid)


@dataclass(frozen=True)
class FileIndexRef:
    """A backup's stored file index (``fileindex/records.py``): what ``find``, ``diff`` and
    ``restore --path`` read instead of the volumes.  Encoded like the volumes, but stored
    in a class that reads back without a thaw."""

    #: The object's file name inside its backup's directory (``layout.index_name``).
    name: str
    stored_size: int
    stored_sha256: str
    #: The size of the index before compression and encryption.
    raw_size: int
    #: The object's version (``Stored.version``) in a bucket that keeps versions.
    version: str | None = None


@dataclass(frozen=True)
class Backup:
    """One backup of one source, as the catalog and its manifest record it."""

    id: str
    source: str
    date: date
    kind: Kind
    parent_id: str | None
    parent_date: dt.date | None
    chain: str
    state: State
    snapshot: str | None
    snapshot_uuid: str | None
    parent_uuid: str | None
    compression: str
    recipients: tuple[str, ...]
    storage_class: str
    raw_bytes: int
    stored_bytes: int
    volume_count: int
    created_at: str
    completed_at: str | None
    #: None for backups stored before btrsendd checked streams (catalog schema 2).
    stream: StreamIdentity | None = None
    #: The manifest's version in a bucket that keeps versions.
    manifest_version: str | None = None
    #: Until when every object of the backup is locked (Object Lock), as far as btrsendd
    #: locked or extended it; None when it locked nothing.
    locked_until: datetime | None = None
    #: None for backups stored before btrsendd kept file indexes, in a Glacier vault (which
    #: has no class readable without a retrieval), or whose index could not be written.
    file_index: FileIndexRef | None = None


#: One chain's backups, the full one first: what restoring its newest member receives.
Chain = tuple[Backup, ...]

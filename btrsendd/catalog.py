"""The sqlite catalog: which backups exist, their volumes, and where each one is in its life.

The catalog is a cache of what the bucket holds (the manifests are the truth, see
``manifest.py``), but it is the cache every decision is made from, so it must never lie:
every state change is one transaction, WAL keeps readers (``status``, ``list``) from blocking
the daemon, and ``PRAGMA user_version`` records the schema so an older btrsendd refuses a
catalog written by a newer one instead of misreading it.

A backup's life: ``uploading`` (rows written before the first byte is sent, volumes added as
each one is stored) -> ``complete`` (manifest stored) -> ``expiring`` (chain chosen for
deletion, remote objects being deleted) -> gone.  Only ``complete`` backups count for the
planner and for restore.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from btrsendd.errors import OperationalError
from btrsendd.permissions import open_state_dir, require_writable

SCHEMA_VERSION = 3
CATALOG_FILE = "catalog.db"

State = Literal["uploading", "complete", "expiring"]
Kind = Literal["full", "incremental"]

_SCHEMA = """
CREATE TABLE backups (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    date          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    parent_id     TEXT REFERENCES backups(id),
    chain         TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('uploading', 'complete', 'expiring')),
    snapshot      TEXT,
    snapshot_uuid TEXT,
    parent_uuid   TEXT,
    compression   TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    storage_class TEXT NOT NULL,
    raw_bytes     INTEGER NOT NULL DEFAULT 0,
    stored_bytes  INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    completed_at  TEXT,
    stream_version         INTEGER,
    stream_name            TEXT,
    stream_uuid            TEXT,
    stream_ctransid        INTEGER,
    stream_parent_uuid     TEXT,
    stream_parent_ctransid INTEGER
);
CREATE INDEX backups_by_source ON backups(source, date);
-- At most one live backup per source and day: dates name backups in btrsend's protocol,
-- in plan/list output and in restore requests, so they must be unambiguous.
CREATE UNIQUE INDEX one_backup_per_day ON backups(source, date);
CREATE TABLE volumes (
    backup_id     TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    raw_offset    INTEGER NOT NULL,
    raw_length    INTEGER NOT NULL,
    raw_sha256    TEXT NOT NULL,
    stored_size   INTEGER NOT NULL,
    stored_sha256 TEXT NOT NULL,
    stored_checksum TEXT,
    PRIMARY KEY (backup_id, idx)
);
-- Restore requests this host has made: a restore restarted after an interruption (or run
-- with --no-wait) keeps waiting for these instead of paying for a second retrieval.
CREATE TABLE restore_requests (
    key           TEXT PRIMARY KEY,
    backup_id     TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    tier          TEXT NOT NULL,
    requested_at  TEXT NOT NULL
);
-- Working directories restore created inside targets: a restore that finds a leftover one
-- deletes it only if it is recorded here with the same subvolume and inode (a name alone
-- could be anyone's, a symlink to anywhere among them).  Not st_dev: btrfs gives
-- subvolumes device numbers that change across mounts.
CREATE TABLE restore_workdirs (
    path          TEXT PRIMARY KEY,
    subvolume     INTEGER NOT NULL,
    inode         INTEGER NOT NULL,
    created_at    TEXT NOT NULL
);
-- Chains are derived, never stored twice: a view keeps "how long is this chain" in one place.
CREATE VIEW chains AS
    SELECT chain AS id, source, MIN(date) AS first_date, MAX(date) AS last_date,
           COUNT(*) AS length, SUM(stored_bytes) AS stored_bytes
    FROM backups WHERE state = 'complete' GROUP BY chain, source;
"""

#: How a catalog of each older schema version is brought to the next one.  A new install
#: gets ``_SCHEMA`` at once; these exist so an upgrade keeps the catalog it finds.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the storage backend's own checksum of each volume (``Volume.stored_checksum``).
    1: ("ALTER TABLE volumes ADD COLUMN stored_checksum TEXT",),
    # 3: what each backup's send stream said it is (``StreamIdentity``), and restore's
    # working directories.  Backups stored before keep NULLs: their streams were not checked.
    2: (
        "ALTER TABLE backups ADD COLUMN stream_version INTEGER",
        "ALTER TABLE backups ADD COLUMN stream_name TEXT",
        "ALTER TABLE backups ADD COLUMN stream_uuid TEXT",
        "ALTER TABLE backups ADD COLUMN stream_ctransid INTEGER",
        "ALTER TABLE backups ADD COLUMN stream_parent_uuid TEXT",
        "ALTER TABLE backups ADD COLUMN stream_parent_ctransid INTEGER",
        "CREATE TABLE restore_workdirs (path TEXT PRIMARY KEY, subvolume INTEGER NOT NULL,"
        " inode INTEGER NOT NULL, created_at TEXT NOT NULL)",
    ),
}

_INSERT_VOLUME = (
    "INSERT INTO volumes (backup_id, idx, name, raw_offset, raw_length, raw_sha256,"
    " stored_size, stored_sha256, stored_checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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

    def row(self, backup_id: str) -> tuple[str | int | None, ...]:
        """The values ``_INSERT_VOLUME`` takes."""
        return (
            backup_id,
            self.index,
            self.name,
            self.raw_offset,
            self.raw_length,
            self.raw_sha256,
            self.stored_size,
            self.stored_sha256,
            self.stored_checksum,
        )


@dataclass(frozen=True)
class RestoreRequest:
    """A retrieval this host asked the storage for: which object, at which tier, when."""

    key: str
    backup_id: str
    tier: str
    requested_at: datetime


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
class BackupRow:
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


_SELECT_BACKUPS = """
    SELECT b.id, b.source, b.date, b.kind, b.parent_id, p.date, b.chain, b.state, b.snapshot,
           b.snapshot_uuid, b.parent_uuid, b.compression, b.recipients, b.storage_class,
           b.raw_bytes, b.stored_bytes,
           (SELECT COUNT(*) FROM volumes v WHERE v.backup_id = b.id),
           b.created_at, b.completed_at, b.stream_version, b.stream_name, b.stream_uuid,
           b.stream_ctransid, b.stream_parent_uuid, b.stream_parent_ctransid
    FROM backups b LEFT JOIN backups p ON p.id = b.parent_id
"""

_STREAM_COLUMNS = (
    "stream_version, stream_name, stream_uuid, stream_ctransid, stream_parent_uuid,"
    " stream_parent_ctransid"
)


def _stream_values(stream: StreamIdentity | None) -> tuple[object, ...]:
    if stream is None:
        return (None,) * 6
    return (
        stream.version,
        stream.name,
        stream.uuid,
        stream.ctransid,
        stream.parent_uuid,
        stream.parent_ctransid,
    )


def _stream_from(values: tuple[object, ...]) -> StreamIdentity | None:
    version, name, uuid, ctransid, parent_uuid, parent_ctransid = values
    if version is None:
        return None
    return StreamIdentity(
        version=int(str(version)),
        name=str(name),
        uuid=str(uuid),
        ctransid=int(str(ctransid)),
        parent_uuid=None if parent_uuid is None else str(parent_uuid),
        parent_ctransid=None if parent_ctransid is None else int(str(parent_ctransid)),
    )


def _backup_from_row(row: sqlite3.Row | tuple[object, ...]) -> BackupRow:
    values = tuple(row)
    (
        bid,
        source,
        day,
        kind,
        parent_id,
        parent_day,
        chain,
        state,
        snapshot,
        snap_uuid,
        parent_uuid,
        compression,
        recipients,
        storage_class,
        raw,
        stored,
        nvol,
        created,
        completed,
    ) = values[:19]
    return BackupRow(
        id=str(bid),
        source=str(source),
        date=date.fromisoformat(str(day)),
        kind="full" if kind == "full" else "incremental",
        parent_id=None if parent_id is None else str(parent_id),
        parent_date=None if parent_day is None else date.fromisoformat(str(parent_day)),
        chain=str(chain),
        state=_state(str(state)),
        snapshot=None if snapshot is None else str(snapshot),
        snapshot_uuid=None if snap_uuid is None else str(snap_uuid),
        parent_uuid=None if parent_uuid is None else str(parent_uuid),
        compression=str(compression),
        recipients=tuple(r for r in str(recipients).split(",") if r),
        storage_class=str(storage_class),
        raw_bytes=int(str(raw)),
        stored_bytes=int(str(stored)),
        volume_count=int(str(nvol)),
        created_at=str(created),
        completed_at=None if completed is None else str(completed),
        stream=_stream_from(values[19:]),
    )


def _state(value: str) -> State:
    if value == "uploading":
        return "uploading"
    if value == "expiring":
        return "expiring"
    return "complete"


class Catalog:
    """One open catalog database.  Use as a context manager, or call ``close()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=FULL")
            (health,) = self._db.execute("PRAGMA quick_check").fetchone()
            if health != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {health}")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            # A state directory made read-only since it was checked is no damaged catalog.
            require_writable(path.parent)
            raise OperationalError(
                f"{path}: the catalog cannot be opened ({exc}); move it aside and run "
                "`btrsendd catalog rebuild` to recreate it from the bucket's manifests"
            ) from None

    @classmethod
    def open(cls, state_dir: Path) -> Catalog:
        """Open (creating if needed) the catalog in ``state_dir``, which is kept root-only."""
        open_state_dir(state_dir)
        return cls(state_dir / CATALOG_FILE)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise OperationalError(
                f"{self.path}: catalog schema {version} was written by a newer btrsendd "
                f"(this one knows up to {SCHEMA_VERSION}); upgrade btrsendd"
            )
        if version == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            # Read again under the write lock: another process may have migrated meanwhile.
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                statements = [s for s in _SCHEMA.split(";") if s.strip()]
            else:
                statements = [s for v in range(version, SCHEMA_VERSION) for s in _MIGRATIONS[v]]
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block as one IMMEDIATE transaction: all of it lands, or none of it."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # -- backups -------------------------------------------------------------------------

    def begin_backup(
        self,
        *,
        id: str,
        source: str,
        day: date,
        kind: Kind,
        parent_id: str | None,
        chain: str,
        snapshot: str | None,
        snapshot_uuid: str | None,
        parent_uuid: str | None,
        compression: str,
        recipients: Sequence[str],
        storage_class: str,
    ) -> None:
        """Record a backup as ``uploading`` before its first byte is sent."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO backups (id, source, date, kind, parent_id, chain, state, snapshot,"
                " snapshot_uuid, parent_uuid, compression, recipients, storage_class,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, 'uploading', ?, ?, ?, ?, ?, ?, ?)",
                (
                    id,
                    source,
                    day.isoformat(),
                    kind,
                    parent_id,
                    chain,
                    snapshot,
                    snapshot_uuid,
                    parent_uuid,
                    compression,
                    ",".join(recipients),
                    storage_class,
                    _now(),
                ),
            )

    def add_volume(self, backup_id: str, volume: Volume) -> None:
        """Record one stored volume and add it to its backup's totals, atomically."""
        with self.transaction() as db:
            db.execute(_INSERT_VOLUME, volume.row(backup_id))
            db.execute(
                "UPDATE backups SET raw_bytes = raw_bytes + ?, stored_bytes = stored_bytes + ?"
                " WHERE id = ?",
                (volume.raw_length, volume.stored_size, backup_id),
            )

    def set_stream(self, backup_id: str, stream: StreamIdentity) -> None:
        """Record what the backup's (checked) send stream says it is, before its manifest."""
        with self.transaction() as db:
            db.execute(
                "UPDATE backups SET stream_version = ?, stream_name = ?, stream_uuid = ?,"
                " stream_ctransid = ?, stream_parent_uuid = ?, stream_parent_ctransid = ?"
                " WHERE id = ?",
                (*_stream_values(stream), backup_id),
            )

    def complete_backup(self, backup_id: str, completed_at: str) -> None:
        """Mark a backup complete: called only after its manifest is stored."""
        with self.transaction() as db:
            db.execute(
                "UPDATE backups SET state = 'complete', completed_at = ? WHERE id = ?",
                (completed_at, backup_id),
            )

    def mark_expiring(self, backup_ids: Iterable[str]) -> None:
        """Flag a chain for deletion before any of its objects are touched."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE backups SET state = 'expiring' WHERE id = ?", [(i,) for i in backup_ids]
            )

    def delete_backups(self, backup_ids: Iterable[str]) -> None:
        """Forget backups (and their volumes) whose remote objects are gone."""
        ids = list(backup_ids)
        with self.transaction() as db:
            # Children first: a chain is deleted as a whole, newest to oldest.
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.executemany("DELETE FROM backups WHERE id = ?", [(i,) for i in ids])

    def insert_complete(self, row: BackupRow, volumes: Sequence[Volume]) -> None:
        """Insert a backup known to be complete (catalog rebuild from a manifest)."""
        with self.transaction() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute(
                "INSERT INTO backups (id, source, date, kind, parent_id, chain, state, snapshot,"
                " snapshot_uuid, parent_uuid, compression, recipients, storage_class,"
                f" raw_bytes, stored_bytes, created_at, completed_at, {_STREAM_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.source,
                    row.date.isoformat(),
                    row.kind,
                    row.parent_id,
                    row.chain,
                    row.snapshot,
                    row.snapshot_uuid,
                    row.parent_uuid,
                    row.compression,
                    ",".join(row.recipients),
                    row.storage_class,
                    row.raw_bytes,
                    row.stored_bytes,
                    row.created_at,
                    row.completed_at,
                    *_stream_values(row.stream),
                ),
            )
            db.executemany(_INSERT_VOLUME, [v.row(row.id) for v in volumes])

    def backups(
        self, source: str | None = None, states: Sequence[State] = ("complete",)
    ) -> list[BackupRow]:
        """Backups in the given states, oldest first (by source, then date)."""
        marks = ",".join("?" for _ in states)
        query = f"{_SELECT_BACKUPS} WHERE b.state IN ({marks})"
        args: list[str] = list(states)
        if source is not None:
            query += " AND b.source = ?"
            args.append(source)
        query += " ORDER BY b.source, b.date"
        return [_backup_from_row(r) for r in self._db.execute(query, args)]

    def backup(self, backup_id: str) -> BackupRow | None:
        row = self._db.execute(f"{_SELECT_BACKUPS} WHERE b.id = ?", (backup_id,)).fetchone()
        return None if row is None else _backup_from_row(row)

    def volumes(self, backup_id: str) -> list[Volume]:
        rows = self._db.execute(
            "SELECT idx, name, raw_offset, raw_length, raw_sha256, stored_size, stored_sha256,"
            " stored_checksum FROM volumes WHERE backup_id = ? ORDER BY idx",
            (backup_id,),
        )
        return [Volume(*r) for r in rows]

    # -- restore requests ----------------------------------------------------------------

    def record_restore_request(self, key: str, backup_id: str, tier: str) -> None:
        """Remember that ``key`` was asked to be restored now (replacing an older request)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO restore_requests VALUES (?, ?, ?, ?)",
                (key, backup_id, tier, _now()),
            )

    def restore_requests(self) -> dict[str, RestoreRequest]:
        """Every recorded restore request, by object key."""
        rows = self._db.execute("SELECT key, backup_id, tier, requested_at FROM restore_requests")
        return {
            key: RestoreRequest(key, backup_id, tier, datetime.fromisoformat(at))
            for key, backup_id, tier, at in rows
        }

    def forget_restore_requests(self, keys: Iterable[str]) -> None:
        """Drop requests whose objects have been read: their restored copies expire anyway."""
        with self.transaction() as db:
            db.executemany("DELETE FROM restore_requests WHERE key = ?", [(k,) for k in keys])

    # -- restore working directories ------------------------------------------------------

    def record_workdir(self, path: str, subvolume: int, inode: int) -> None:
        """Remember a working directory restore just created (before anything goes in it)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO restore_workdirs VALUES (?, ?, ?, ?)",
                (path, subvolume, inode, _now()),
            )

    def workdir(self, path: str) -> tuple[int, int] | None:
        """The (subvolume id, inode) recorded for a working directory at ``path``, if any."""
        row = self._db.execute(
            "SELECT subvolume, inode FROM restore_workdirs WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def forget_workdir(self, path: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM restore_workdirs WHERE path = ?", (path,))

    def is_empty(self) -> bool:
        (count,) = self._db.execute("SELECT COUNT(*) FROM backups").fetchone()
        return bool(count == 0)

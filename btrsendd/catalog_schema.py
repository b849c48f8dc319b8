"""The catalog's sqlite schema, its migrations, and how rows map to the model.

Kept apart from the queries in ``catalog.py``: the schema is a format with versions (an older
btrsendd refuses a newer catalog), and what changes it has to change in one place.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime

from btrsendd.model import Backup, FileIndexRef, State, StreamIdentity, Volume

SCHEMA_VERSION = 5
CATALOG_FILE = "catalog.db"

SCHEMA = """
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
    stream_parent_ctransid INTEGER,
    manifest_version       TEXT,
    locked_until           TEXT,
    index_name          TEXT,
    index_stored_size   INTEGER,
    index_stored_sha256 TEXT,
    index_raw_size      INTEGER,
    index_version       TEXT
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
    version       TEXT,
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
-- Object versions whose backups are gone from the catalog but which were still locked
-- (Object Lock) when they were to be deleted: the next cycles delete each batch once none of
-- its versions is locked, manifests first.  ``until`` is the latest lock seen.
CREATE TABLE deferred_deletions (
    batch         TEXT NOT NULL,
    source        TEXT NOT NULL,
    key           TEXT NOT NULL,
    version       TEXT NOT NULL,
    size          INTEGER NOT NULL,
    until         TEXT NOT NULL,
    delete_marker INTEGER NOT NULL,
    PRIMARY KEY (key, version)
);
-- What the last `verify` of each source found in a bucket that keeps versions: versions and
-- delete markers no backup owns, billed until `verify --clean` (or their lock) ends them.
-- `status` counts them: it cannot list the bucket itself.  (No semicolons in comments here:
-- the schema is split on them.)
CREATE TABLE stray_versions (
    source        TEXT PRIMARY KEY,
    versions      INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    checked_at    TEXT NOT NULL
);
-- Chains are derived, never stored twice: a view keeps "how long is this chain" in one place.
CREATE VIEW chains AS
    SELECT chain AS id, source, MIN(date) AS first_date, MAX(date) AS last_date,
           COUNT(*) AS length, SUM(stored_bytes) AS stored_bytes
    FROM backups WHERE state = 'complete' GROUP BY chain, source;
"""

#: How a catalog of each older schema version is brought to the next one.  A new install
#: gets ``_SCHEMA`` at once; these exist so an upgrade keeps the catalog it finds.
MIGRATIONS: dict[int, tuple[str, ...]] = {
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
    # 4: object versions and Object Lock.  Older backups keep NULLs: written unversioned
    # and unlocked, they are read and deleted by key as before.
    3: (
        "ALTER TABLE volumes ADD COLUMN version TEXT",
        "ALTER TABLE backups ADD COLUMN manifest_version TEXT",
        "ALTER TABLE backups ADD COLUMN locked_until TEXT",
        "CREATE TABLE deferred_deletions (batch TEXT NOT NULL, source TEXT NOT NULL,"
        " key TEXT NOT NULL, version TEXT NOT NULL, size INTEGER NOT NULL,"
        " until TEXT NOT NULL, delete_marker INTEGER NOT NULL, PRIMARY KEY (key, version))",
        "CREATE TABLE stray_versions (source TEXT PRIMARY KEY, versions INTEGER NOT NULL,"
        " bytes INTEGER NOT NULL, checked_at TEXT NOT NULL)",
    ),
    # 5: each backup's file index (``FileIndexRef``).  Older backups keep NULLs: they have
    # none, and find and diff say they cannot see into them.
    4: tuple(
        f"ALTER TABLE backups ADD COLUMN {column}"
        for column in (
            "index_name TEXT",
            "index_stored_size INTEGER",
            "index_stored_sha256 TEXT",
            "index_raw_size INTEGER",
            "index_version TEXT",
        )
    ),
}

INSERT_VOLUME = (
    "INSERT INTO volumes (backup_id, idx, name, raw_offset, raw_length, raw_sha256,"
    " stored_size, stored_sha256, stored_checksum, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def volume_values(backup_id: str, volume: Volume) -> tuple[str | int | None, ...]:
    """The values ``INSERT_VOLUME`` takes."""
    return (
        backup_id,
        volume.index,
        volume.name,
        volume.raw_offset,
        volume.raw_length,
        volume.raw_sha256,
        volume.stored_size,
        volume.stored_sha256,
        volume.stored_checksum,
        volume.version,
    )


SELECT_BACKUPS = """
    SELECT b.id, b.source, b.date, b.kind, b.parent_id, p.date, b.chain, b.state, b.snapshot,
           b.snapshot_uuid, b.parent_uuid, b.compression, b.recipients, b.storage_class,
           b.raw_bytes, b.stored_bytes,
           (SELECT COUNT(*) FROM volumes v WHERE v.backup_id = b.id),
           b.created_at, b.completed_at, b.stream_version, b.stream_name, b.stream_uuid,
           b.stream_ctransid, b.stream_parent_uuid, b.stream_parent_ctransid,
           b.manifest_version, b.locked_until, b.index_name, b.index_stored_size,
           b.index_stored_sha256, b.index_raw_size, b.index_version
    FROM backups b LEFT JOIN backups p ON p.id = b.parent_id
"""

STREAM_COLUMNS = (
    "stream_version, stream_name, stream_uuid, stream_ctransid, stream_parent_uuid,"
    " stream_parent_ctransid"
)


def stream_values(stream: StreamIdentity | None) -> tuple[object, ...]:
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


INDEX_COLUMNS = "index_name, index_stored_size, index_stored_sha256, index_raw_size, index_version"


def index_values(ref: FileIndexRef | None) -> tuple[object, ...]:
    if ref is None:
        return (None,) * 5
    return (ref.name, ref.stored_size, ref.stored_sha256, ref.raw_size, ref.version)


def _index_from(values: tuple[object, ...]) -> FileIndexRef | None:
    name, stored_size, stored_sha256, raw_size, version = values
    if name is None:
        return None
    return FileIndexRef(
        name=str(name),
        stored_size=int(str(stored_size)),
        stored_sha256=str(stored_sha256),
        raw_size=int(str(raw_size)),
        version=None if version is None else str(version),
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


def backup_from_row(row: sqlite3.Row | tuple[object, ...]) -> Backup:
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
    return Backup(
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
        stream=_stream_from(values[19:25]),
        manifest_version=None if values[25] is None else str(values[25]),
        locked_until=None if values[26] is None else datetime.fromisoformat(str(values[26])),
        file_index=_index_from(values[27:32]),
    )


def _state(value: str) -> State:
    if value == "uploading":
        return "uploading"
    if value == "expiring":
        return "expiring"
    return "complete"

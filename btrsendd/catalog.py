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

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from btrsendd.catalog_schema import (
    CATALOG_FILE,
    INDEX_COLUMNS,
    INSERT_VOLUME,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    SELECT_BACKUPS,
    STREAM_COLUMNS,
    backup_from_row,
    index_values,
    stream_values,
    volume_values,
)
from btrsendd.errors import OperationalError
from btrsendd.model import (
    Backup,
    DeferredDeletion,
    FileIndexRef,
    Kind,
    RestoreRequest,
    State,
    StreamIdentity,
    Volume,
)
from btrsendd.permissions import open_state_dir, require_writable


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


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
                statements = [s for s in SCHEMA.split(";") if s.strip()]
            else:
                statements = [s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]]
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
        locked_until: datetime | None = None,
    ) -> None:
        """Record a backup as ``uploading`` before its first byte is sent."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO backups (id, source, date, kind, parent_id, chain, state, snapshot,"
                " snapshot_uuid, parent_uuid, compression, recipients, storage_class,"
                " created_at, locked_until)"
                " VALUES (?, ?, ?, ?, ?, ?, 'uploading', ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    _iso(locked_until),
                ),
            )

    def add_volume(self, backup_id: str, volume: Volume) -> None:
        """Record one stored volume and add it to its backup's totals, atomically."""
        with self.transaction() as db:
            db.execute(INSERT_VOLUME, volume_values(backup_id, volume))
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
                (*stream_values(stream), backup_id),
            )

    def set_file_index(self, backup_id: str, ref: FileIndexRef) -> None:
        """Record the backup's stored file index, before its manifest (which lists it)."""
        with self.transaction() as db:
            db.execute(
                f"UPDATE backups SET ({INDEX_COLUMNS}) = (?, ?, ?, ?, ?) WHERE id = ?",
                (*index_values(ref), backup_id),
            )

    def complete_backup(
        self, backup_id: str, completed_at: str, manifest_version: str | None = None
    ) -> None:
        """Mark a backup complete: called only after its manifest is stored."""
        with self.transaction() as db:
            db.execute(
                "UPDATE backups SET state = 'complete', completed_at = ?, manifest_version = ?"
                " WHERE id = ?",
                (completed_at, manifest_version, backup_id),
            )

    def set_locked_until(self, backup_ids: Iterable[str], until: datetime) -> None:
        """Record that every object of these backups is now locked until ``until``."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE backups SET locked_until = ? WHERE id = ?",
                [(_iso(until), i) for i in backup_ids],
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

    def defer_deletion(
        self, backup_ids: Iterable[str], deferred: Sequence[DeferredDeletion]
    ) -> None:
        """Forget backups whose objects are still locked, keeping their versions to delete
        later (``deferred``), in one transaction: nothing is forgotten without a trace."""
        ids = list(backup_ids)
        with self.transaction() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.executemany(
                "INSERT OR REPLACE INTO deferred_deletions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (d.batch, d.source, d.key, d.version, d.size, _iso(d.until), d.delete_marker)
                    for d in deferred
                ],
            )
            db.executemany("DELETE FROM backups WHERE id = ?", [(i,) for i in ids])

    def deferred_deletions(self, source: str | None = None) -> list[DeferredDeletion]:
        """Deferred versions (of ``source``, or all), by batch and key."""
        query = (
            "SELECT batch, source, key, version, size, until, delete_marker FROM deferred_deletions"
        )
        args: tuple[str, ...] = ()
        if source is not None:
            query += " WHERE source = ?"
            args = (source,)
        rows = self._db.execute(query + " ORDER BY batch, key", args)
        return [
            DeferredDeletion(b, s, k, v, int(n), datetime.fromisoformat(u), bool(m))
            for b, s, k, v, n, u, m in rows
        ]

    def set_deferred_until(self, batch: str, until: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deferred_deletions SET until = ? WHERE batch = ?", (_iso(until), batch)
            )

    def drop_deferred(self, batch: str, versions: Sequence[tuple[str, str]]) -> None:
        """Forget the (key, version) pairs of ``batch`` that are deleted."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM deferred_deletions WHERE batch = ? AND key = ? AND version = ?",
                [(batch, key, version) for key, version in versions],
            )

    def record_strays(self, source: str, versions: int, size: int) -> None:
        """Remember what ``verify`` found of versions no backup of ``source`` owns."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO stray_versions VALUES (?, ?, ?, ?)",
                (source, versions, size, _now()),
            )

    def strays(self) -> dict[str, tuple[int, int, str]]:
        """By source: the stray versions and bytes the last ``verify`` found, and when."""
        rows = self._db.execute("SELECT source, versions, bytes, checked_at FROM stray_versions")
        return {s: (int(n), int(b), str(at)) for s, n, b, at in rows}

    def insert_complete(self, row: Backup, volumes: Sequence[Volume]) -> None:
        """Insert a backup known to be complete (catalog rebuild from a manifest)."""
        with self.transaction() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute(
                "INSERT INTO backups (id, source, date, kind, parent_id, chain, state, snapshot,"
                " snapshot_uuid, parent_uuid, compression, recipients, storage_class,"
                f" raw_bytes, stored_bytes, created_at, completed_at, {STREAM_COLUMNS},"
                f" manifest_version, locked_until, {INDEX_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    *stream_values(row.stream),
                    row.manifest_version,
                    _iso(row.locked_until),
                    *index_values(row.file_index),
                ),
            )
            db.executemany(INSERT_VOLUME, [volume_values(row.id, v) for v in volumes])

    def backups(
        self, source: str | None = None, states: Sequence[State] = ("complete",)
    ) -> list[Backup]:
        """Backups in the given states, oldest first (by source, then date)."""
        marks = ",".join("?" for _ in states)
        query = f"{SELECT_BACKUPS} WHERE b.state IN ({marks})"
        args: list[str] = list(states)
        if source is not None:
            query += " AND b.source = ?"
            args.append(source)
        query += " ORDER BY b.source, b.date"
        return [backup_from_row(r) for r in self._db.execute(query, args)]

    def backup(self, backup_id: str) -> Backup | None:
        row = self._db.execute(f"{SELECT_BACKUPS} WHERE b.id = ?", (backup_id,)).fetchone()
        return None if row is None else backup_from_row(row)

    def volumes(self, backup_id: str) -> list[Volume]:
        rows = self._db.execute(
            "SELECT idx, name, raw_offset, raw_length, raw_sha256, stored_size, stored_sha256,"
            " stored_checksum, version FROM volumes WHERE backup_id = ? ORDER BY idx",
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

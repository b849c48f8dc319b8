"""The glacier-vault backend's index: a sqlite file in the state directory mapping each key to
its archive (id, size, tree hash) and each archive to the retrieval job already paid for.

Vaults know no keys of their own, so this is where a key lives; it can be rebuilt from an
inventory (``inventory.py``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from btrsendd.errors import OperationalError
from btrsendd.storage.vault.archives import Archive, now

_INDEX_SCHEMA_VERSION = 1
_INDEX_SCHEMA = """
CREATE TABLE archives (
    key        TEXT PRIMARY KEY,
    archive_id TEXT NOT NULL,
    size       INTEGER NOT NULL,
    tree_hash  TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- One retrieval job per archive: the job is what was paid for, so a restarted restore finds
-- it here instead of paying again.
CREATE TABLE retrievals (
    archive_id   TEXT PRIMARY KEY,
    job_id       TEXT NOT NULL,
    tier         TEXT NOT NULL,
    requested_at TEXT NOT NULL
);
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_INVENTORY_JOB = "inventory_job"


class VaultIndex:
    """The sqlite file mapping keys to archives and archives to retrieval jobs.

    Opened on first use, so building a ``VaultStorage`` (``check-config`` does) touches no
    file.  One connection guarded by a lock: the engine may call from more than one thread
    over a daemon's life, and sqlite's own locking covers other processes (a restore running
    beside the daemon).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db or self._open()
            try:
                with db:
                    yield db
            except sqlite3.Error as exc:
                raise OperationalError(f"vault index {self.path}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            new = not self.path.exists()
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            if new:
                self.path.chmod(0o600)  # it lists every backup: root-only like the catalog
            db.execute("PRAGMA journal_mode=WAL")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > _INDEX_SCHEMA_VERSION:
                raise OperationalError(
                    f"vault index {self.path} was written by a newer btrsendd; upgrade btrsendd"
                )
            if version == 0:
                with db:
                    for statement in _INDEX_SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {_INDEX_SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise OperationalError(f"cannot open vault index {self.path}: {exc}") from None
        self._db = db
        return db

    def archive(self, key: str) -> Archive | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT key, archive_id, size, tree_hash, created_at FROM archives WHERE key = ?",
                (key,),
            ).fetchone()
        return None if row is None else Archive(*row)

    def archives(self, prefix: str) -> list[Archive]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, archive_id, size, tree_hash, created_at FROM archives"
                " WHERE substr(key, 1, length(?)) = ? ORDER BY key",
                (prefix, prefix),
            ).fetchall()
        return [Archive(*row) for row in rows]

    def record(self, archive: Archive) -> Archive | None:
        """Point ``archive.key`` at ``archive``; returns the archive it pointed at before."""
        previous = self.archive(archive.key)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO archives VALUES (?, ?, ?, ?, ?)",
                (
                    archive.key,
                    archive.archive_id,
                    archive.size,
                    archive.tree_hash,
                    archive.created_at,
                ),
            )
        return previous

    def forget(self, archive: Archive) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM archives WHERE key = ? AND archive_id = ?",
                (archive.key, archive.archive_id),
            )
            db.execute("DELETE FROM retrievals WHERE archive_id = ?", (archive.archive_id,))

    def retrieval(self, archive_id: str) -> str | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id FROM retrievals WHERE archive_id = ?", (archive_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def record_retrieval(self, archive_id: str, job_id: str, tier: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO retrievals VALUES (?, ?, ?, ?)",
                (archive_id, job_id, tier, now()),
            )

    def drop_retrieval(self, archive_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM retrievals WHERE archive_id = ?", (archive_id,))

    def inventory_job(self) -> str | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT value FROM settings WHERE name = ?", (_INVENTORY_JOB,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_inventory_job(self, job_id: str | None) -> None:
        with self._transaction() as db:
            if job_id is None:
                db.execute("DELETE FROM settings WHERE name = ?", (_INVENTORY_JOB,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO settings VALUES (?, ?)", (_INVENTORY_JOB, job_id)
                )

    def replace_from_inventory(self, found: Sequence[Archive], inventory_date: str) -> int:
        """Make the inventory's archives the map, keeping what was uploaded after it was taken.

        AWS takes a vault's inventory about once a day, so archives recorded here after
        ``inventory_date`` are missing from it without being gone.  Returns how many such
        newer entries were kept.
        """
        taken = datetime.fromisoformat(inventory_date)
        listed = {a.archive_id for a in found}
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, archive_id, size, tree_hash, created_at FROM archives"
            ).fetchall()
            newer = [
                a
                for a in (Archive(*row) for row in rows)
                if a.archive_id not in listed and datetime.fromisoformat(a.created_at) > taken
            ]
            db.execute("DELETE FROM archives")
            for a in [*found, *newer]:
                db.execute(
                    "INSERT OR REPLACE INTO archives VALUES (?, ?, ?, ?, ?)",
                    (a.key, a.archive_id, a.size, a.tree_hash, a.created_at),
                )
            db.execute(
                "DELETE FROM retrievals WHERE archive_id NOT IN (SELECT archive_id FROM archives)"
            )
        return len(newer)

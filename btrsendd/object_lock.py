"""Object Lock: until when a backup's objects are locked, and keeping every kept chain locked.

With ``storage.object_lock`` on, every object is written locked (``Lock``) until the day its
chain could first expire, plus a margin: the planner expires a chain once its newest backup
is ``chain_lifetime_days`` old, so no lock ever stops a deletion the planner wants before
then, and no deletion the planner wants waits longer than the margin.  The lock is the
chain's, the same for all its members, so that a chain's manifests never outlive its volumes.

What moves the date: an incremental joining the chain (the older members are extended
first, and the backup fails if they cannot be), and time itself for chains the planner
keeps past that day (the newest chain is never expired): each cycle extends every kept lock
that would end within the margin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby

from btrsendd.errors import OperationalError, StorageError
from btrsendd.log import get_logger
from btrsendd.model import Backup
from btrsendd.repository import Repository
from btrsendd.storage import backend_of
from btrsendd.storage.base import Lock, Locking, LockMode


def chain_lock_until(
    newest: date, *, lifetime_days: int, minimum_days: int, margin_days: int, today: date
) -> datetime:
    """The retain-until of every object of a chain whose newest backup is dated ``newest``.

    The day the chain could expire, never sooner than the storage class's minimum duration
    (deleting sooner is billed anyway), never in the past (S3 refuses that: a backup dated
    back still gets a lock that holds), plus the margin; at midnight UTC, so that all the
    objects of a chain carry one date.
    """
    expires = newest + timedelta(days=max(lifetime_days, minimum_days))
    day = max(expires, today) + timedelta(days=margin_days)
    return datetime.combine(day, time(), UTC)


class ObjectLock:
    """The lock policy of one repository; inert when ``storage.object_lock`` is off."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        cfg = repo.config.storage
        self.margin = timedelta(days=cfg.object_lock_margin_days)
        self.mode: LockMode | None = None
        self.storage: Locking | None = None
        if cfg.object_lock != "off" and isinstance(repo.storage, Locking):
            self.mode = "GOVERNANCE" if cfg.object_lock == "governance" else "COMPLIANCE"
            self.storage = repo.storage
        minimum = backend_of(cfg).minimum_duration(cfg)
        self.minimum_days = 0 if minimum is None else minimum.days

    def require(self) -> None:
        """Refuse to store anything unlocked that the configuration wants locked."""
        if self.storage is not None and (problem := self.storage.lock_problem()) is not None:
            raise OperationalError(problem)

    def for_chain(self, newest: date, today: date | None = None) -> Lock | None:
        """The lock for the objects of a chain whose newest backup is dated ``newest``."""
        if self.mode is None:
            return None
        until = chain_lock_until(
            newest,
            lifetime_days=self.repo.config.schedule.chain_lifetime_days,
            minimum_days=self.minimum_days,
            margin_days=self.margin.days,
            today=today or date.today(),
        )
        return Lock(self.mode, until)

    def extend(self, rows: Sequence[Backup], lock: Lock) -> None:
        """Lock every object of ``rows`` until ``lock.until`` at least, before anything new
        depends on them; ``StorageError`` if the storage refuses."""
        if self.storage is None:
            return
        for row in rows:
            if row.locked_until is not None and row.locked_until >= lock.until:
                continue
            for key, version in self._objects(row):
                self.storage.extend_lock(key, version, lock)
            self.repo.catalog.set_locked_until([row.id], lock.until)
            get_logger(source=row.source, backup_id=row.id).info(
                "lock.extended", until=lock.until.isoformat()
            )

    def refresh(self, source: str, today: date) -> None:
        """Extend the lock of every kept chain of ``source`` that would end within the margin
        (run after expiry: what the planner let go is not kept)."""
        if self.storage is None:
            return
        soon = datetime.combine(today, time(), UTC) + self.margin
        rows = self.repo.catalog.backups(source)
        for _, members in groupby(sorted(rows, key=lambda r: r.chain), key=lambda r: r.chain):
            chain = list(members)
            if all(r.locked_until is not None and r.locked_until > soon for r in chain):
                continue
            lock = self.for_chain(max(r.date for r in chain), today)
            assert lock is not None
            # A chain kept past its expiry day would otherwise be extended by a day each
            # cycle: a second margin spaces the extensions out.
            lock = Lock(lock.mode, max(lock.until, soon + self.margin))
            try:
                self.extend(chain, lock)
            except StorageError as exc:
                # One damaged old chain must not stop every backup; its lock may lapse,
                # which the warning says (each cycle, until it is mended).
                get_logger(source=source).warning(
                    "lock.extend_failed",
                    chain=chain[0].chain,
                    error=str(exc),
                    detail="this chain's lock was not extended and may end; `btrsendd "
                    "verify` names what is missing, `btrsendd forget` removes a damaged backup",
                )

    def _objects(self, row: Backup) -> Iterator[tuple[str, str | None]]:
        """(key, version) of the manifest, the file index and every volume of ``row``;
        version None (the current one) for objects written before btrsendd recorded
        versions."""
        layout = self.repo.layout
        yield layout.manifest_key(row), row.manifest_version
        if row.file_index is not None:
            yield layout.key(row, row.file_index.name), row.file_index.version
        for vol in self.repo.catalog.volumes(row.id):
            yield layout.key(row, vol.name), vol.version

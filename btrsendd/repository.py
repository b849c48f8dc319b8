"""The repository: the configuration, the catalog, the storage and its layout, opened once.

Every command works on one: backup and restore, verify and rebuild, status and forget depend
on it, never on each other.  It answers the questions they share (what is due, which volumes
make up a chain, where each is stored) and does the one change they share: deleting backups,
in the order that keeps the catalog and the bucket consistent whatever interrupts it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import groupby

from btrsendd import placement, planner
from btrsendd.catalog import Catalog
from btrsendd.config import Config
from btrsendd.errors import BtrsenddError, ConfigError
from btrsendd.interrupt import Interrupted
from btrsendd.layout import MANIFEST_NAME, Layout, Located
from btrsendd.lock import state_lock
from btrsendd.log import get_logger
from btrsendd.model import Backup, DeferredDeletion
from btrsendd.storage import open_storage
from btrsendd.storage.base import IncompleteUploads, Locking, Storage, Version, Versioned


@dataclass
class Repository:
    config: Config
    catalog: Catalog
    storage: Storage
    layout: Layout

    def schedule(self) -> planner.Schedule:
        s = self.config.schedule
        return planner.Schedule(
            backup_days=s.backup_days,
            max_incrementals=s.max_incrementals,
            chain_lifetime_days=s.chain_lifetime_days,
            catch_up=s.catch_up,
        )

    def plan(self, source: str, day: date, *, force: bool = False) -> planner.Plan:
        """The planner's decision for ``source`` on ``day``, from complete backups only."""
        return planner.plan(self.schedule(), self.catalog.backups(source), day, force=force)

    def volumes(self, chain: Sequence[Backup]) -> list[Located]:
        """Every volume of ``chain`` with its key, in the order a restore reads them."""
        return [
            Located(row, v, self.layout.key(row, v.name))
            for row in chain
            for v in self.catalog.volumes(row.id)
        ]

    def delete_backups(self, rows: Sequence[Backup]) -> datetime | None:
        """Delete backups: remote objects first, then their rows.

        The rows turn ``expiring`` first, so an interruption is finished by the next cycle's
        recovery.  Manifests go before volumes, newest first: at every moment the manifests
        left in storage describe backups that can be restored, which is what ``catalog
        rebuild`` adopts.  Objects still locked (Object Lock) are not touched: the rows go,
        their versions wait in the catalog for a later cycle (``finish_deferred``); returns
        until when, or None when all is deleted.
        """
        self.catalog.mark_expiring([r.id for r in rows])
        try:
            return self._remove(rows)
        except Interrupted as exc:
            exc.tell(
                f"deleting {len(rows)} backup(s) ({', '.join(r.id for r in rows)}) "
                "was cut short; they stay 'expiring' and the next backup finishes the deletion"
            )
            raise

    def discard(self, row: Backup) -> None:
        """Remove a partial backup's objects, then its row; the next cycle retries if the
        storage refuses now."""
        try:
            self._remove([row])
        except BtrsenddError as exc:
            get_logger(source=row.source, backup_id=row.id).warning(
                "backup.cleanup_deferred", error=str(exc)
            )

    def _remove(self, rows: Sequence[Backup]) -> datetime | None:
        newest_first = sorted(rows, key=lambda r: r.date, reverse=True)
        for r in newest_first:
            # Open uploads are no backup's: billed, never locked, never waited for.
            self.abort_leftover_uploads(r)
        versions = self._versions(newest_first)
        if versions is not None and (until := self._defer_if_locked(rows, versions)):
            return until
        for r in newest_first:
            self._delete(r, versions, manifest_only=True)
        for r in newest_first:
            self._delete(r, versions)
        self.catalog.delete_backups([r.id for r in rows])
        return None

    def _delete(
        self, row: Backup, versions: dict[str, list[Version]] | None, manifest_only: bool = False
    ) -> None:
        """Delete ``row``'s manifest (or all its objects): every version of them where the
        storage keeps versions, since a plain delete there only hides them."""
        manifest = self.layout.manifest_key(row)
        if versions is None or not isinstance(self.storage, Versioned):
            self.storage.delete([manifest] if manifest_only else self._keys_of(row))
            return
        wanted = [v for v in versions[row.id] if not manifest_only or v.key == manifest]
        self.storage.delete_versions(wanted)

    def _versions(self, rows: Sequence[Backup]) -> dict[str, list[Version]] | None:
        """Every version under each backup's directory, by backup id; None if the storage
        keeps no versions."""
        if not (isinstance(self.storage, Versioned) and self.storage.keeps_versions()):
            return None
        return {r.id: list(self.storage.versions(self.layout.backup_dir_of(r))) for r in rows}

    def _defer_if_locked(
        self, rows: Sequence[Backup], versions: dict[str, list[Version]]
    ) -> datetime | None:
        """If any version of ``rows`` is still locked, forget the rows and keep their versions
        to delete later, as one batch; returns until when the latest lock holds."""
        flat = [v for r in rows for v in versions[r.id]]
        if not self.may_be_locked(rows):
            return None
        until = self.locked_until(flat)
        if until is None:
            return None
        batch = min(r.id for r in rows)
        self.catalog.defer_deletion(
            [r.id for r in rows],
            [
                DeferredDeletion(
                    batch, rows[0].source, v.key, v.version, v.size, until, v.delete_marker
                )
                for v in flat
            ],
        )
        get_logger(source=rows[0].source).warning(
            "expiry.locked",
            backups=[r.id for r in rows],
            until=until.isoformat(),
            detail="their objects are locked (Object Lock); a cycle after that date deletes them",
        )
        return until

    def may_be_locked(self, rows: Sequence[Backup] = ()) -> bool:
        """Whether versions (of ``rows``) may be locked, so that the storage must be asked
        before deleting them.  Not only when ``object_lock`` is on: locks outlive turning it
        off, a catalog rebuilt without it knows of none, and a bucket's default retention
        locks what btrsendd never did; a bucket without Object Lock is not asked (the policy
        for it does not allow s3:GetObjectRetention)."""
        if not isinstance(self.storage, Locking):
            return False
        if self.config.storage.object_lock != "off" or any(r.locked_until for r in rows):
            return True
        return self.storage.has_object_lock()

    def locked_until(self, versions: Sequence[Version]) -> datetime | None:
        """The latest moment any of ``versions`` is locked until, if one is locked now.

        Asked of the storage, not the catalog: an admin may have lifted a governance lock.
        """
        if not isinstance(self.storage, Locking):
            return None
        now = datetime.now(UTC)
        latest: datetime | None = None
        for v in versions:
            lock = None if v.delete_marker else self.storage.lock_of(v.key, v.version)
            if lock is not None and lock.until > now and (latest is None or lock.until > latest):
                latest = lock.until
        return latest

    def finish_deferred(self, source: str) -> None:
        """Delete what no lock holds any more of each deferred batch of ``source``, manifests
        first, and volumes once no manifest of the batch is left; report what still waits.

        Versions are asked one by one: one that someone else locked (for years, in
        compliance mode) keeps only itself, and the manifests while it is one, waiting.
        """
        if not isinstance(self.storage, Versioned):
            return
        entries = self.catalog.deferred_deletions(source)
        log = get_logger(source=source)
        for batch, members in groupby(entries, key=lambda d: d.batch):
            deferred = [Version(d.key, d.version, d.size, False, d.delete_marker) for d in members]
            ends = {v: self.locked_until([v]) for v in deferred}
            locked = [v for v, end in ends.items() if end is not None]
            manifests = [v for v in deferred if v.key.endswith("/" + MANIFEST_NAME)]
            gone = [v for v in manifests if v not in locked]
            if not any(v in locked for v in manifests):
                gone += [v for v in deferred if v not in manifests and v not in locked]
            self.storage.delete_versions(gone)
            self.catalog.drop_deferred(batch, [(v.key, v.version) for v in gone])
            if not locked:
                log.info("expiry.finished", batch=batch, versions=len(deferred))
                continue
            until = max(end for end in ends.values() if end is not None)
            self.catalog.set_deferred_until(batch, until)
            log.info("expiry.waiting", batch=batch, until=until.isoformat(), locked=len(locked))

    def abort_leftover_uploads(self, row: Backup) -> None:
        """Abort what an interrupted volume left unfinished (open multipart uploads cost
        money; temporary files take space)."""
        if isinstance(self.storage, IncompleteUploads):
            self.storage.abort_incomplete_uploads(self.layout.backup_dir_of(row))

    def _keys_of(self, row: Backup) -> list[str]:
        return [o.key for o in self.storage.list(self.layout.backup_dir_of(row))]


@contextmanager
def open_repository(config: Config, *, lock: str | None = None) -> Iterator[Repository]:
    """The repository ``config`` describes.

    ``lock`` names the purpose when the block changes state (backups, expiry, forget): it
    holds the state directory's lock, so two writers never plan the same backup twice.
    """
    if (around := placement.archive_problem(config)) is not None:
        raise ConfigError(f"{config.source_file}: storage.path: {around}")
    with state_lock(config.state_dir, lock) if lock else nullcontext():
        catalog = Catalog.open(config.state_dir)
        try:
            storage = open_storage(config.storage, config.pipeline, config.state_dir)
            yield Repository(config, catalog, storage, Layout(config.storage.prefix))
        finally:
            catalog.close()

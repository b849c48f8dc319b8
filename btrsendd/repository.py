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
from datetime import date

from btrsendd import placement, planner
from btrsendd.catalog import Catalog
from btrsendd.config import Config
from btrsendd.errors import BtrsenddError, ConfigError
from btrsendd.interrupt import Interrupted
from btrsendd.layout import Layout, Located
from btrsendd.lock import state_lock
from btrsendd.log import get_logger
from btrsendd.model import Backup
from btrsendd.storage import open_storage
from btrsendd.storage.base import IncompleteUploads, Storage


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

    def delete_backups(self, rows: Sequence[Backup]) -> None:
        """Delete backups: remote objects first, then their rows.

        The rows turn ``expiring`` first, so an interruption is finished by the next cycle's
        recovery.  Manifests go before volumes, newest first: at every moment the manifests
        left in storage describe backups that can be restored, which is what ``catalog
        rebuild`` adopts.
        """
        newest_first = sorted(rows, key=lambda r: r.date, reverse=True)
        self.catalog.mark_expiring([r.id for r in rows])
        try:
            for r in newest_first:
                self.storage.delete([self.layout.manifest_key(r)])
            for r in newest_first:
                self.abort_leftover_uploads(r)
                self.storage.delete(self._keys_of(r))
        except Interrupted as exc:
            exc.tell(
                f"deleting {len(rows)} backup(s) ({', '.join(r.id for r in newest_first)}) "
                "was cut short; they stay 'expiring' and the next backup finishes the deletion"
            )
            raise
        self.catalog.delete_backups([r.id for r in rows])

    def discard(self, row: Backup) -> None:
        """Remove a partial backup's objects, then its row; the next cycle retries if the
        storage refuses now."""
        try:
            self.storage.delete(self._keys_of(row))
        except BtrsenddError as exc:
            get_logger(source=row.source, backup_id=row.id).warning(
                "backup.cleanup_deferred", error=str(exc)
            )
            return
        self.catalog.delete_backups([row.id])

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

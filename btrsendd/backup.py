"""One backup cycle for one source: snapshot -> plan -> expire -> upload -> prune.

This is the engine behind ``btrsendd backup``, ``backup-stdin`` and the daemon's scheduled
cycle; the front ends only choose the date and print the outcome.  Storing a backup (and
finishing an interrupted one) is ``upload.py``'s; deleting backups, the repository's.  The
snapshot is taken between the source's ``pre_snapshot`` and ``post_snapshot`` hooks, and the
cycle ends with its ``on_success`` or ``on_failure`` (``hooks.py``); ``backup-stdin`` takes
no snapshot and runs no hooks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from btrsendd import placement, planner, snapshots
from btrsendd.config import SourceConfig
from btrsendd.errors import BtrsenddError, OperationalError, Stopped, UsageError
from btrsendd.hooks import Hooks
from btrsendd.log import get_logger
from btrsendd.model import Backup
from btrsendd.pipeline.btrfs import run_send, send_command
from btrsendd.repository import Repository
from btrsendd.storage.base import Readable
from btrsendd.upload import OnProgress, Uploader


@dataclass
class Outcome:
    """What one cycle did for one source, for the CLI's summary and the daemon's status."""

    source: str
    date: date
    action: str
    reason: str
    backup_id: str | None = None
    parent_date: dt.date | None = None
    expired: list[dt.date] = field(default_factory=list)
    raw_bytes: int = 0
    stored_bytes: int = 0
    volumes: int = 0

    def stored(self, row: Backup) -> None:
        self.backup_id = row.id
        self.raw_bytes = row.raw_bytes
        self.stored_bytes = row.stored_bytes
        self.volumes = row.volume_count


def planned(repo: Repository, source: str, day: date, *, force: bool = False) -> Outcome:
    """What a cycle on ``day`` would do, changing nothing (``plan``, ``backup --dry-run``)."""
    return _outcome(source, day, repo.plan(source, day, force=force))


class BackupCycle:
    """Backs up the sources of one repository."""

    def __init__(self, repo: Repository, on_progress: OnProgress | None = None) -> None:
        self.repo = repo
        self.uploader = Uploader(repo, on_progress)

    def run(self, src: SourceConfig, day: date, *, force: bool = False) -> Outcome:
        """Snapshot, plan, expire, upload and prune for one source on ``day``; then tell its
        ``on_success`` or ``on_failure`` hook."""
        hooks = Hooks(self.repo.config.hooks, src.name)
        try:
            outcome = self._run(src, day, force, hooks)
        except Exception as exc:
            if not isinstance(exc, Stopped):
                reason = str(exc) if isinstance(exc, BtrsenddError) else f"internal error: {exc!r}"
                hooks.notify("on_failure", reason)
            raise
        hooks.notify("on_success", _summary(outcome))
        return outcome

    def _run(self, src: SourceConfig, day: date, force: bool, hooks: Hooks) -> Outcome:
        log = get_logger(source=src.name)
        check_date(day)
        self.uploader.recover(src.name, src)
        self.check_clock(src.name, day)
        decision = self.repo.plan(src.name, day, force=force)
        # A forced backup sends the data as it is now, not as the day's first snapshot saw it.
        fresh = force and decision.action != "none"
        snap = hooks.around_snapshot(
            lambda: snapshots.take_snapshot(src.path, src.snapshot_dir, day, fresh=fresh)
        )
        log.info("snapshot.created", snapshot=str(snap.path), date=day.isoformat())
        nested = placement.nested_subvolumes(self.repo.config, src)
        if nested.paths or nested.unnamed:
            log.warning(
                "backup.nested_subvolumes",
                paths=[str(p) for p in nested.paths],
                unnamed=nested.unnamed,
                detail="in no backup: a send stream stops at subvolume boundaries; give each "
                "a [[sources]] entry of its own, or make it a plain directory",
            )
        parent_snap: snapshots.Snapshot | None = None
        if decision.parent is not None:
            parent = self.repo.catalog.backup(decision.parent.id)
            parent_snap = (
                None if parent is None else snapshots.snapshot_of(src.snapshot_dir, parent)
            )
            if parent_snap is None:
                log.warning(
                    "backup.parent_missing",
                    parent=decision.parent.date.isoformat(),
                    detail="parent snapshot is gone locally; sending a full backup instead",
                )
                decision = planner.as_full(
                    decision, f"parent snapshot of {decision.parent.date} missing locally"
                )
        log.info(
            "backup.planned",
            action=decision.action,
            parent=None if decision.parent is None else decision.parent.date.isoformat(),
            expire=[b.date.isoformat() for b in decision.expire],
            reason=decision.reason,
        )
        outcome = _outcome(src.name, day, decision)
        self.expire(src.name, decision)
        if decision.action != "none":
            cmd = send_command(snap.path, None if parent_snap is None else parent_snap.path)
            with run_send(cmd) as stream:
                outcome.stored(
                    self.uploader.upload(src.name, day, decision, stream, snap, parent_snap)
                )
        self.prune(src, day)
        return outcome

    def run_stdin(
        self, source: str, day: date, announce: Callable[[planner.Plan], None], stream: Readable
    ) -> Outcome:
        """The cycle of ``backup-stdin``: no snapshot of its own, so nothing to resume from
        or prune; ``announce`` tells the sender which stream to send (btrsend's protocol)
        before it is read from ``stream``."""
        check_date(day)
        self.uploader.recover(source)
        self.check_clock(source, day)
        decision = self.repo.plan(source, day)
        outcome = _outcome(source, day, decision)
        self.expire(source, decision)
        if decision.action != "none":
            announce(decision)
            outcome.stored(self.uploader.upload(source, day, decision, stream))
        return outcome

    def check_clock(self, source: str, day: date) -> None:
        """Refuse to act on a date before the newest backup: the clock (or --date) is wrong.

        Snapshots and backups are named by date; one dated before the newest backup would
        sort wrongly in every chain, so nothing is done until the date is right again.
        """
        done = self.repo.catalog.backups(source)
        if done and day < done[-1].date:
            newest = done[-1].date
            raise OperationalError(
                f"the date {day} is earlier than the newest backup ({newest}); has "
                "the clock moved backwards? Nothing was done; fix the system clock (or --date), "
                f"or, if the backup of {newest} is the mistake, remove it with `btrsendd forget "
                f"--source {source} --date {newest}`"
            )

    def expire(self, source: str, decision: planner.Plan) -> None:
        """Delete the whole chain the planner let go, if any, and say so; then keep every
        chain still kept locked (``object_lock.py``)."""
        rows = [r for r in (self.repo.catalog.backup(b.id) for b in decision.expire) if r]
        if rows:
            self._delete_chain(source, rows)
        self.uploader.locks.refresh(source, dt.date.today())

    def _delete_chain(self, source: str, rows: list[Backup]) -> None:
        if self.repo.delete_backups(rows) is not None:
            return  # still locked: `expiry.locked` said until when
        get_logger(source=source).info(
            "chain.expired",
            chain=rows[0].chain,
            dates=[r.date.isoformat() for r in rows],
            backups=len(rows),
            stored_bytes=sum(r.stored_bytes for r in rows),
        )

    def prune(self, src: SourceConfig, day: date) -> None:
        """Local retention, keeping the snapshot the next incremental will be sent against."""
        latest = self.repo.catalog.backups(src.name)
        keep: set[Path] = set()
        if latest and latest[-1].snapshot:
            keep.add(src.snapshot_dir / latest[-1].snapshot)
        keep_days = self.repo.config.snapshots.keep_days
        for snap in snapshots.prune(src.snapshot_dir, day, keep_days, keep):
            get_logger(source=src.name).info("snapshot.deleted", snapshot=str(snap.path))


def check_date(day: date) -> None:
    """Refuse to back up for a date later than tomorrow (a typo, or a clock gone wrong).

    A backup dated ahead would be the newest for as long as the real date is behind it: every
    real backup would be refused as "the clock moved backwards", local snapshots would be
    pruned against that date, and the chains it made look old would expire.  Tomorrow is
    still allowed, for a --date written in another time zone.
    """
    latest = dt.date.today() + dt.timedelta(days=1)
    if day > latest:
        raise UsageError(
            f"the date {day} is in the future (after tomorrow, {latest}); nothing was done: "
            "check --date, or the system clock"
        )


def _summary(outcome: Outcome) -> str:
    """What ``on_success`` is told (``BTRSENDD_MESSAGE``)."""
    if outcome.backup_id is None:
        return f"no backup due ({outcome.reason})"
    return (
        f"{outcome.action} backup {outcome.backup_id} stored: {outcome.raw_bytes} bytes sent, "
        f"{outcome.stored_bytes} stored in {outcome.volumes} volume(s)"
    )


def _outcome(source: str, day: date, decision: planner.Plan) -> Outcome:
    return Outcome(
        source=source,
        date=day,
        action=decision.action,
        reason=decision.reason,
        parent_date=None if decision.parent is None else decision.parent.date,
        expired=[b.date for b in decision.expire],
    )

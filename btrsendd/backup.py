"""One backup cycle for one source: snapshot -> plan -> expire -> upload -> record -> prune.

This is the engine behind ``btrsendd backup``, ``backup-stdin`` and the daemon's scheduled
cycle; the front ends only choose the date and print the outcome.

Ordering is what makes a crash harmless:
- a backup's catalog row exists (``uploading``) before its first object, so an interrupted
  upload is always found and cleaned at the next cycle;
- every stream passes a ``StreamChecker`` on its way to the volumes, and a stream that is
  truncated, damaged, not a send stream, or not of the snapshot (and parent) planned fails
  the backup, whose objects are then deleted at once;
- its manifest is stored after every volume, and the row turns ``complete`` after the
  manifest: "complete" in the catalog implies complete in the bucket;
- expiry marks the chain ``expiring`` first, deletes manifests (so no member looks complete
  while its volumes vanish), then volumes, then the rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from btrsendd import layout, planner, snapshots
from btrsendd.catalog import BackupRow, Catalog, Volume
from btrsendd.config import Config, SourceConfig
from btrsendd.errors import (
    BtrsenddError,
    ConfigError,
    OperationalError,
    StorageError,
    UsageError,
)
from btrsendd.expected_stream import expected_stream
from btrsendd.interrupt import Interrupted
from btrsendd.lock import state_lock
from btrsendd.log import get_logger
from btrsendd.manifest import MANIFEST_NAME, Manifest
from btrsendd.pipeline import CHUNK, Codec, encode_volumes, run_send, send_command
from btrsendd.progress import Progress
from btrsendd.sendstream import StreamChecker, StreamError, checked
from btrsendd.storage import object_key, open_storage
from btrsendd.storage.base import Readable, Storage, Stored


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


@dataclass
class Engine:
    """What every cycle needs: the configuration, the open catalog and the storage backend."""

    config: Config
    catalog: Catalog
    storage: Storage
    #: Called with every progress update of an upload, from the pipeline's feeder thread.
    #: The daemon publishes bytes and rate from it, and aborts the upload on SIGTERM by
    #: raising from it: the pipeline then stops its stages and the upload fails as any
    #: failed upload does (resumed or discarded at the next cycle).
    on_progress: Callable[[str, Progress], None] | None = None

    @property
    def codec(self) -> Codec:
        return Codec.from_config(self.config.pipeline, self.config.encryption)

    def schedule(self) -> planner.Schedule:
        s = self.config.schedule
        return planner.Schedule(
            backup_days=s.backup_days,
            max_incrementals=s.max_incrementals,
            chain_lifetime_days=s.chain_lifetime_days,
            catch_up=s.catch_up,
        )

    def backup_dir(self, source: str, backup_id: str) -> str:
        return object_key(self.config.storage.prefix, source, backup_id)

    def backup_dir_of(self, row: BackupRow) -> str:
        return self.backup_dir(row.source, row.id)

    def key(self, row: BackupRow, name: str) -> str:
        return f"{self.backup_dir_of(row)}/{name}"

    # -- planning ------------------------------------------------------------------------

    def plan(self, source: str, day: date, *, force: bool = False) -> planner.Plan:
        """The planner's decision for ``source`` on ``day``, from complete backups only."""
        done = [
            planner.Backup(id=r.id, date=r.date, chain=r.chain, kind=r.kind)
            for r in self.catalog.backups(source)
        ]
        return planner.plan(self.schedule(), done, day, force=force)

    # -- the cycle -----------------------------------------------------------------------

    def run_cycle(
        self, src: SourceConfig, day: date, *, force: bool = False, dry_run: bool = False
    ) -> Outcome:
        """Snapshot, plan, expire, upload and prune for one source on ``day``."""
        log = get_logger(source=src.name)
        if dry_run:
            decision = self.plan(src.name, day, force=force)
            return _outcome(src.name, day, decision)
        check_date(day)
        self.recover(src.name, src)
        self.check_clock(src.name, day)
        decision = self.plan(src.name, day, force=force)
        # A forced backup sends the data as it is now, not as the day's first snapshot saw it.
        fresh = force and decision.action != "none"
        snap = snapshots.take_snapshot(src.path, src.snapshot_dir, day, fresh=fresh)
        log.info("snapshot.created", snapshot=str(snap.path), date=day.isoformat())
        nested = layout.nested_subvolumes(self.config, src)
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
            parent_snap = self._parent_snapshot(src, decision.parent.id)
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
        if decision.expire:
            self.expire(src.name, [b.id for b in decision.expire])
        if decision.action != "none":
            cmd = send_command(snap.path, None if parent_snap is None else parent_snap.path)
            with run_send(cmd) as stream:
                row = self.upload(src.name, day, decision, stream, snap, parent_snap)
            outcome.backup_id = row.id
            outcome.raw_bytes = row.raw_bytes
            outcome.stored_bytes = row.stored_bytes
            outcome.volumes = row.volume_count
        self.prune(src, day)
        return outcome

    def check_clock(self, source: str, day: date) -> None:
        """Refuse to act on a date before the newest backup: the clock (or --date) is wrong.

        Snapshots and backups are named by date; one dated before the newest backup would
        sort wrongly in every chain, so nothing is done until the date is right again.
        """
        done = self.catalog.backups(source)
        if done and day < done[-1].date:
            newest = done[-1].date
            raise OperationalError(
                f"{source}: the date {day} is earlier than the newest backup ({newest}); has "
                "the clock moved backwards? Nothing was done; fix the system clock (or --date), "
                f"or, if the backup of {newest} is the mistake, remove it with `btrsendd forget "
                f"--source {source} --date {newest}`"
            )

    def _parent_snapshot(self, src: SourceConfig, parent_id: str) -> snapshots.Snapshot | None:
        """The local snapshot a planned incremental is relative to, if it is still there."""
        parent = self.catalog.backup(parent_id)
        if parent is None or parent.snapshot is None:
            return None
        for snap in snapshots.list_snapshots(src.snapshot_dir):
            if snap.name == parent.snapshot and (
                parent.snapshot_uuid is None or snap.uuid == parent.snapshot_uuid
            ):
                return snap
        return None

    def upload(
        self,
        source: str,
        day: date,
        decision: planner.Plan,
        stream: Readable,
        snap: snapshots.Snapshot | None = None,
        parent_snap: snapshots.Snapshot | None = None,
    ) -> BackupRow:
        """Check ``stream`` and encode it into volumes, store them and the manifest, record
        completion.

        Each stored volume is recorded at once.  If the upload fails after some volumes are
        stored, the backup stays ``uploading`` and the next cycle resumes it from the first
        missing volume (``recover``); with nothing stored yet, or when the stream fails its
        check, it is removed.  ``snap`` and ``parent_snap`` are the snapshots ``stream`` was
        sent from, when known (not for ``backup-stdin``).
        """
        assert decision.action in ("full", "incremental")
        kind: Any = decision.action
        short = "full" if kind == "full" else "inc"
        backup_id = f"{day.isoformat()}-{short}-{secrets.token_hex(3)}"
        parent = decision.parent
        codec = self.codec
        checker = StreamChecker(
            expected_stream(
                self.catalog, kind, None if parent is None else parent.id, snap, parent_snap
            )
        )
        self.catalog.begin_backup(
            id=backup_id,
            source=source,
            day=day,
            kind=kind,
            parent_id=None if parent is None else parent.id,
            chain=backup_id if parent is None else parent.chain,
            snapshot=None if snap is None else snap.name,
            snapshot_uuid=None if snap is None else snap.uuid,
            parent_uuid=None if parent_snap is None else parent_snap.uuid,
            compression=codec.compression,
            recipients=codec.recipients,
            storage_class=self.storage_class,
        )
        get_logger(source=source, backup_id=backup_id).info(
            "backup.started", kind=kind, date=day.isoformat()
        )
        return self._store_and_finish(backup_id, checked(stream, checker), checker, skipped=[])

    def _store_and_finish(
        self, backup_id: str, stream: Readable, checker: StreamChecker, skipped: Sequence[Volume]
    ) -> BackupRow:
        """Store the rest of ``stream`` as volumes after ``skipped``, then the manifest.

        ``stream`` is read through ``checker``: the stream's identity is recorded once it
        has passed, before the manifest (which is built from the row) is written.
        """
        row = self.catalog.backup(backup_id)
        assert row is not None
        log = get_logger(source=row.source, backup_id=backup_id)
        codec = self.codec
        skipped_bytes = sum(v.raw_length for v in skipped)
        progress = Progress(f"{row.source} {row.kind} {row.date}", log)

        def store(index: int, data: Readable) -> Stored:
            return self.storage.put_stream(self.key(row, _volume_name(index, codec)), data)

        started = time.monotonic()
        try:
            for res in encode_volumes(
                stream,
                codec,
                self.config.pipeline.volume_size,
                store,
                on_progress=partial(self._progress, row.source, progress),
                first_index=len(skipped),
                first_offset=skipped_bytes,
            ):
                self.catalog.add_volume(
                    backup_id,
                    Volume(name=_volume_name(res.index, codec), **asdict(res)),
                )
            self.catalog.set_stream(backup_id, checker.finish())
            self._check_stored(row)
            self.catalog.complete_backup(backup_id, self._write_manifest(backup_id))
        except BaseException as exc:
            progress.done()
            stored = len(self.catalog.volumes(backup_id))
            # A stream that fails its check would fail it again when replayed: nothing of it
            # is worth keeping.  With nothing stored the partial backup is dropped too, unless
            # storage itself failed: cleaning up would only wait out a second retry budget on
            # the same dead endpoint, and the next cycle resumes (from volume 0) or discards
            # it anyway.
            discard = isinstance(exc, StreamError) or (
                not stored and not isinstance(exc, StorageError)
            )
            # The front end (CLI or daemon) reports the cycle's `backup.failed`; this event
            # says what became of the upload itself.
            log.error(
                "upload.failed",
                error=str(exc) if isinstance(exc, BtrsenddError) else repr(exc),
                volumes_stored=stored,
                next_step="discarded" if discard else "resume at the next cycle",
            )
            if discard:
                self._discard(row.source, backup_id)
            if isinstance(exc, Interrupted):
                exc.tell(_upload_aftermath(row, stored))
            raise
        progress.done()
        done = self.catalog.backup(backup_id)
        assert done is not None
        duration = time.monotonic() - started
        sent = done.raw_bytes - skipped_bytes
        log.info(
            "backup.completed",
            kind=done.kind,
            date=done.date.isoformat(),
            bytes=done.raw_bytes,
            stored_bytes=done.stored_bytes,
            volumes=done.volume_count,
            resumed_bytes=skipped_bytes,
            duration=round(duration, 3),
            rate=round(sent / max(duration, 1e-6)),
        )
        return done

    def _gone(self, row: BackupRow, listed: dict[str, int]) -> list[Volume]:
        """The recorded volumes of ``row`` that ``listed`` (key: size) lacks or has resized:
        deleted by someone else (another machine backing up to the same prefix running
        ``verify --clean``, a lifecycle rule)."""
        return [
            v
            for v in self.catalog.volumes(row.id)
            if listed.get(self.key(row, v.name)) != v.stored_size
        ]

    def _check_stored(self, row: BackupRow) -> None:
        """Refuse to write the manifest unless every volume it lists is in storage: a
        manifest says the backup can be restored, and ``catalog rebuild`` trusts it."""
        listed = {o.key: o.size for o in self.storage.list(self.backup_dir_of(row) + "/")}
        gone = self._gone(row, listed)
        if gone:
            raise StorageError(
                f"volume {gone[0].index} of backup {row.id} ({self.key(row, gone[0].name)}) is "
                "missing from storage, or changed, although it was stored: something else "
                "deletes objects there (another machine backing up to the same prefix? a "
                "lifecycle rule?); no manifest was written, and the next backup starts afresh"
            )

    def _progress(self, source: str, progress: Progress, total_bytes: int) -> None:
        progress.update(total_bytes)
        if self.on_progress is not None:
            self.on_progress(source, progress)

    @property
    def storage_class(self) -> str:
        """The class volumes are stored in, as restore prices and ``status`` costs know it."""
        backend = self.config.storage.backend
        if backend == "local":
            return "local"
        if backend == "glacier-vault":
            return "GLACIER_VAULT"
        return self.config.storage.storage_class

    def _write_manifest(self, backup_id: str) -> str:
        """Store the manifest, the completion marker; returns the completion time it records."""
        row = self.catalog.backup(backup_id)
        assert row is not None
        completed_at = datetime.now(UTC).isoformat(timespec="seconds")
        row = replace(row, state="complete", completed_at=completed_at)
        manifest = Manifest(row, tuple(self.catalog.volumes(backup_id)))
        self.storage.put_bytes(self.key(row, MANIFEST_NAME), manifest.to_json())
        return completed_at

    def _discard(self, source: str, backup_id: str) -> None:
        """Remove a partial backup's objects, then its row; ``recover`` retries if that fails."""
        try:
            keys = [o.key for o in self.storage.list(self.backup_dir(source, backup_id) + "/")]
            self.storage.delete(keys)
        except BtrsenddError as exc:
            get_logger(source=source, backup_id=backup_id).warning(
                "backup.cleanup_deferred", error=str(exc)
            )
            return
        self.catalog.delete_backups([backup_id])

    # -- expiry and recovery -------------------------------------------------------------

    def expire(self, source: str, backup_ids: Sequence[str]) -> None:
        """Delete a whole chain the planner let go, and say so."""
        rows = [r for r in (self.catalog.backup(i) for i in backup_ids) if r is not None]
        if not rows:
            return
        self.delete_backups(rows)
        get_logger(source=source).info(
            "chain.expired",
            chain=rows[0].chain,
            dates=[r.date.isoformat() for r in rows],
            backups=len(rows),
            stored_bytes=sum(r.stored_bytes for r in rows),
        )

    def delete_backups(self, rows: Sequence[BackupRow]) -> None:
        """Delete backups: remote objects first, then their rows.

        The rows turn ``expiring`` first, so an interruption is finished by the next
        ``recover``.  Manifests go before volumes, newest first: at every moment the
        manifests left in storage describe backups that can be restored, which is what
        ``catalog rebuild`` adopts.
        """
        newest_first = sorted(rows, key=lambda r: r.date, reverse=True)
        self.catalog.mark_expiring([r.id for r in rows])
        try:
            for r in newest_first:
                self.storage.delete([self.key(r, MANIFEST_NAME)])
            for r in newest_first:
                self._abort_leftover_uploads(r)
                self.storage.delete([o.key for o in self.storage.list(self.backup_dir_of(r) + "/")])
        except Interrupted as exc:
            exc.tell(
                f"deleting {len(rows)} backup(s) ({', '.join(r.id for r in newest_first)}) "
                "was cut short; they stay 'expiring' and the next backup finishes the deletion"
            )
            raise
        self.catalog.delete_backups([r.id for r in rows])

    def recover(self, source: str, src: SourceConfig | None = None) -> None:
        """Finish what an interruption left: resume or discard uploads, finish expiries.

        An interrupted upload is resumed when its snapshots are still there (``src`` tells
        where; ``backup-stdin`` streams cannot be replayed, so without it they are
        discarded).  A resume that cannot prove the skipped volumes match discards the partial
        backup instead, and the planner then starts afresh.
        """
        for row in self.catalog.backups(source, states=("uploading",)):
            self._abort_leftover_uploads(row)
            # Never resume what a clock gone ahead started: that backup is the mistake.
            ahead = row.date > dt.date.today() + dt.timedelta(days=1)
            plan = None if src is None or ahead else self._resume_plan(src, row)
            if plan is None:
                get_logger(source=source, backup_id=row.id).warning(
                    "backup.discarded",
                    reason="interrupted upload that cannot be resumed",
                    date=row.date.isoformat(),
                )
                self._discard(source, row.id)
                continue
            snap, parent_snap = plan
            try:
                self._resume(row, snap, parent_snap)
            except _ResumeMismatch as exc:
                get_logger(source=source, backup_id=row.id).warning(
                    "backup.discarded", reason=str(exc), date=row.date.isoformat()
                )
                self._discard(source, row.id)
        expiring = self.catalog.backups(source, states=("expiring",))
        if expiring:
            # An expiry or a `forget` was interrupted: finish what it decided.
            self.delete_backups(expiring)
            get_logger(source=source).info(
                "backup.deletion_finished", backups=[r.id for r in expiring]
            )

    def _abort_leftover_uploads(self, row: BackupRow) -> None:
        """Abort multipart uploads an interrupted volume left open (they cost money)."""
        abort = getattr(self.storage, "abort_incomplete_uploads", None)
        if abort is not None:
            abort(self.backup_dir_of(row) + "/")

    def _resume_plan(
        self, src: SourceConfig, row: BackupRow
    ) -> tuple[snapshots.Snapshot, snapshots.Snapshot | None] | None:
        """The snapshots to replay ``row``'s send from, if all are present and unchanged."""
        codec = self.codec
        if (row.compression, row.recipients) != (codec.compression, codec.recipients):
            return None  # the configuration changed: the stored volumes no longer fit
        local = {s.name: s for s in snapshots.list_snapshots(src.snapshot_dir)}
        snap = local.get(row.snapshot or "")
        if snap is None or snap.uuid != row.snapshot_uuid:
            return None
        if row.parent_id is None:
            return snap, None
        parent_snap = self._parent_snapshot(src, row.parent_id)
        if parent_snap is None or parent_snap.uuid != row.parent_uuid:
            return None
        return snap, parent_snap

    def _resume(
        self, row: BackupRow, snap: snapshots.Snapshot, parent_snap: snapshots.Snapshot | None
    ) -> BackupRow:
        """Re-run the same ``btrfs send``, prove the stored volumes match, upload the rest.

        ``btrfs send`` of the same snapshot pair is deterministic, so the raw bytes of each
        recorded volume must hash to what was recorded; anything else means the stream is not
        the one the stored volumes came from.  The skipped bytes pass the stream check too
        (they may have been stored before btrsendd checked streams): if they fail it, the
        stored volumes are worthless and the backup starts afresh.
        """
        done = self.catalog.volumes(row.id)
        keep = {self.key(row, v.name) for v in done} | {self.key(row, MANIFEST_NAME)}
        listed = {o.key: o.size for o in self.storage.list(self.backup_dir_of(row) + "/")}
        self.storage.delete([k for k in listed if k not in keep])
        gone = self._gone(row, listed)
        if gone:
            # Skipping it would complete a backup that cannot be restored.
            raise _ResumeMismatch(
                f"stored volume {gone[0].index} is missing from storage, or changed; "
                "starting the backup afresh"
            )
        log = get_logger(source=row.source, backup_id=row.id)
        checker = StreamChecker(
            expected_stream(self.catalog, row.kind, row.parent_id, snap, parent_snap)
        )
        cmd = send_command(snap.path, None if parent_snap is None else parent_snap.path)
        with run_send(cmd) as raw:
            stream = checked(raw, checker)
            for vol in done:
                try:
                    digest = _hash_prefix(stream, vol.raw_length)
                except StreamError as exc:
                    raise _ResumeMismatch(
                        f"the replayed send stream fails its check ({exc}); starting the "
                        "backup afresh"
                    ) from None
                if digest != vol.raw_sha256:
                    raise _ResumeMismatch(
                        f"the send stream differs from stored volume {vol.index}; "
                        "starting the backup afresh"
                    )
            log.info(
                "backup.resumed",
                date=row.date.isoformat(),
                volumes_skipped=len(done),
                bytes_saved=sum(v.raw_length for v in done),
            )
            return self._store_and_finish(row.id, stream, checker, skipped=done)

    def prune(self, src: SourceConfig, day: date) -> None:
        """Local retention, keeping the snapshot the next incremental will be sent against."""
        latest = self.catalog.backups(src.name)
        keep: set[Path] = set()
        if latest and latest[-1].snapshot:
            keep.add(src.snapshot_dir / latest[-1].snapshot)
        for snap in snapshots.prune(src.snapshot_dir, day, self.config.snapshots.keep_days, keep):
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


@contextmanager
def open_engine(config: Config, *, lock: str | None = None) -> Iterator[Engine]:
    """An engine over the configured catalog and storage.

    ``lock`` names the purpose when the block changes state (backups, expiry): it holds the
    state directory's lock, so two writers never plan the same backup twice.
    """
    if (around := layout.archive_problem(config)) is not None:
        raise ConfigError(f"{config.source_file}: storage.path: {around}")
    with state_lock(config.state_dir, lock) if lock else nullcontext():
        catalog = Catalog.open(config.state_dir)
        try:
            yield Engine(
                config, catalog, open_storage(config.storage, config.pipeline, config.state_dir)
            )
        finally:
            catalog.close()


class _ResumeMismatch(OperationalError):
    """The replayed send stream does not match what was stored: resume is impossible."""


def _volume_name(index: int, codec: Codec) -> str:
    return f"vol-{index:05d}.{codec.suffix}"


def _upload_aftermath(row: BackupRow, stored: int) -> str:
    """What an interrupted upload left, for the one line the command prints."""
    what = f"backup {row.id} of {row.source} ({row.date})"
    if not stored:
        return f"{what}: nothing was stored; it was discarded"
    return f"{what}: {stored} volume(s) stored; the next backup resumes it from there"


def _hash_prefix(stream: Readable, length: int) -> str:
    """SHA-256 of the next ``length`` bytes of ``stream`` (fewer if it ends early)."""
    digest = hashlib.sha256()
    while length > 0:
        data = stream.read(min(CHUNK, length))
        if not data:
            break
        digest.update(data)
        length -= len(data)
    return digest.hexdigest() if length == 0 else "short stream"


def _outcome(source: str, day: date, decision: planner.Plan) -> Outcome:
    return Outcome(
        source=source,
        date=day,
        action=decision.action,
        reason=decision.reason,
        parent_date=None if decision.parent is None else decision.parent.date,
        expired=[b.date for b in decision.expire],
    )

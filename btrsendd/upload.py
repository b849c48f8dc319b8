"""Storing one backup: its stream checked, cut into volumes, encoded, stored, then its manifest;
and finishing what an interruption left (resume, discard, deletions cut short).

Ordering is what makes a crash harmless:
- a backup's catalog row exists (``uploading``) before its first object, so an interrupted
  upload is always found and cleaned at the next cycle;
- every stream passes a ``StreamChecker`` on its way to the volumes, and a stream that is
  truncated, damaged, not a send stream, or not of the snapshot (and parent) planned fails
  the backup, whose objects are then deleted at once;
- each volume is recorded as soon as it is stored: what a resumed upload skips;
- the manifest is stored after every volume (all of them listed again first), and the row
  turns ``complete`` after the manifest: "complete" in the catalog implies complete in the
  bucket.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import partial

from btrsendd import planner, snapshots
from btrsendd.config import SourceConfig
from btrsendd.errors import StorageError
from btrsendd.fileindex.stored import IndexBuilder, index_builder, index_problem, store_index
from btrsendd.interruptions import unfinished_upload
from btrsendd.layout import new_backup_id, volume_name
from btrsendd.log import get_logger
from btrsendd.manifest import Manifest
from btrsendd.model import Backup, Kind, Volume
from btrsendd.object_lock import ObjectLock
from btrsendd.pipeline.btrfs import run_send, send_command
from btrsendd.pipeline.codec import Codec, encode_volumes
from btrsendd.pipeline.expected_stream import expected_stream
from btrsendd.pipeline.sendstream import StreamChecker, StreamError, checked
from btrsendd.progress import Progress, Total
from btrsendd.repository import Repository
from btrsendd.resume_check import ResumeMismatch, hash_prefix, resume_plan
from btrsendd.storage.base import Lock, Readable, Stored
from btrsendd.stream_estimate import estimate_stream

#: Called with every progress update of an upload, from the pipeline's feeder thread.  The
#: daemon publishes bytes and rate from it, and aborts the upload on SIGTERM by raising from
#: it: the pipeline then stops its stages and the upload fails as any failed upload does.
OnProgress = Callable[[str, Progress], None]


class Uploader:
    """Stores backups into one repository."""

    def __init__(self, repo: Repository, on_progress: OnProgress | None = None) -> None:
        self.repo = repo
        self.on_progress = on_progress
        #: The repository's lock policy, also the cycle's (``BackupCycle.expire``).
        self.locks = ObjectLock(repo)

    @property
    def codec(self) -> Codec:
        config = self.repo.config
        return Codec.from_config(config.pipeline, config.encryption)

    def upload(
        self,
        source: str,
        day: date,
        decision: planner.Plan,
        stream: Readable,
        snap: snapshots.Snapshot | None = None,
        parent_snap: snapshots.Snapshot | None = None,
    ) -> Backup:
        """Check ``stream`` and encode it into volumes, store them and the manifest, record
        completion.

        If the upload fails after some volumes are stored, the backup stays ``uploading`` and
        the next cycle resumes it from the first missing volume (``recover``); with nothing
        stored yet, or when the stream fails its check, it is removed.  ``snap`` and
        ``parent_snap`` are the snapshots ``stream`` was sent from, when known (not for
        ``backup-stdin``).
        """
        assert decision.action in ("full", "incremental")
        kind: Kind = decision.action
        backup_id = new_backup_id(day, kind)
        parent = decision.parent
        codec = self.codec
        catalog = self.repo.catalog
        checker = StreamChecker(
            expected_stream(catalog, kind, None if parent is None else parent.id, snap, parent_snap)
        )
        locks = self.locks
        locks.require()
        lock = locks.for_chain(day)
        if lock is not None and parent is not None:
            # Before anything new depends on them: a chain whose older members could be
            # deleted before its newest would be a chain that cannot be restored.
            locks.extend([r for r in catalog.backups(source) if r.chain == parent.chain], lock)
        catalog.begin_backup(
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
            storage_class=self.repo.storage.storage_class,
            locked_until=None if lock is None else lock.until,
        )
        get_logger(source=source, backup_id=backup_id).info(
            "backup.started", kind=kind, date=day.isoformat()
        )
        with index_builder(self.repo) as index:
            return self._store_and_finish(
                backup_id, _read_through(stream, checker, index), checker, [], snap, index
            )

    def _store_and_finish(
        self,
        backup_id: str,
        stream: Readable,
        checker: StreamChecker,
        skipped: Sequence[Volume],
        snap: snapshots.Snapshot | None,
        index: IndexBuilder | None,
    ) -> Backup:
        """Store the rest of ``stream`` (sent from ``snap``) as volumes after ``skipped``,
        then its file index (built by ``index`` from the whole stream), then the manifest.

        ``stream`` is read through ``checker``: the stream's identity is recorded once it
        has passed, before the manifest (which is built from the row) is written.
        """
        repo, catalog = self.repo, self.repo.catalog
        row = catalog.backup(backup_id)
        assert row is not None
        log = get_logger(source=row.source, backup_id=backup_id)
        codec = self.codec
        skipped_bytes = sum(v.raw_length for v in skipped)
        lock = self._lock(row)
        label = f"{row.source} {row.kind} {row.date}" + (" (resumed)" if skipped else "")
        total = estimate_stream(catalog, row.source, row.kind, None if snap is None else snap.path)
        progress = Progress(label, log, total=total, start=skipped_bytes)

        def store(index: int, data: Readable) -> Stored:
            return repo.storage.put_stream(
                repo.layout.key(row, volume_name(index, codec.suffix)), data, lock
            )

        started = time.monotonic()
        try:
            for vol in encode_volumes(
                stream,
                codec,
                repo.config.pipeline.volume_size,
                store,
                on_progress=partial(self._progress, row.source, progress),
                first_index=len(skipped),
                first_offset=skipped_bytes,
            ):
                catalog.add_volume(backup_id, vol)
            catalog.set_stream(backup_id, checker.finish())
            if (ref := store_index(repo, row, index, codec, lock)) is not None:
                catalog.set_file_index(backup_id, ref)
            self._check_stored(row)
            catalog.complete_backup(backup_id, *self._write_manifest(backup_id, lock))
        except BaseException as exc:
            progress.done()
            stored = len(catalog.volumes(backup_id))
            # A stream that fails its check would fail it again when replayed: nothing of it
            # is worth keeping.  With nothing stored the partial backup is dropped too, unless
            # storage itself failed: cleaning up would only wait out a second retry budget on
            # the same dead endpoint, and the next cycle resumes (from volume 0) or discards
            # it anyway.
            discard = isinstance(exc, StreamError) or (
                not stored and not isinstance(exc, StorageError)
            )
            # Logged (a stop as a warning, a failure as an error) and recorded for `status`.
            unfinished_upload(repo.config.state_dir, row, exc, stored, discarded=discard)
            if discard:
                repo.discard(row)
            raise
        progress.done()
        done = catalog.backup(backup_id)
        assert done is not None
        duration = time.monotonic() - started
        log.info(
            "backup.completed",
            kind=done.kind,
            date=done.date.isoformat(),
            bytes=done.raw_bytes,
            stored_bytes=done.stored_bytes,
            volumes=done.volume_count,
            resumed_bytes=skipped_bytes,
            duration=round(duration, 3),
            rate=round((done.raw_bytes - skipped_bytes) / max(duration, 1e-6)),
        )
        return done

    def _gone(self, row: Backup, listed: dict[str, int]) -> list[Volume]:
        """The recorded volumes of ``row`` that ``listed`` (key: size) lacks or has resized:
        deleted by someone else (another machine backing up to the same prefix running
        ``verify --clean``, a lifecycle rule)."""
        return [
            v
            for v in self.repo.catalog.volumes(row.id)
            if listed.get(self.repo.layout.key(row, v.name)) != v.stored_size
        ]

    def _listed(self, row: Backup) -> dict[str, int]:
        return {o.key: o.size for o in self.repo.storage.list(self.repo.layout.backup_dir_of(row))}

    def _check_stored(self, row: Backup) -> None:
        """Refuse to write the manifest unless every volume (and the file index) it lists is
        in storage: a manifest says the backup can be restored, and ``catalog rebuild``
        trusts it."""
        listed = self._listed(row)
        now = self.repo.catalog.backup(row.id)
        if now is not None and (problem := index_problem(self.repo, now, listed)) is not None:
            raise StorageError(
                f"{problem}, although it was stored: something else deletes "
                "objects there; no manifest was written"
            )
        gone = self._gone(row, listed)
        if gone:
            raise StorageError(
                f"volume {gone[0].index} of backup {row.id} "
                f"({self.repo.layout.key(row, gone[0].name)}) is missing from storage, or "
                "changed, although it was stored: something else deletes objects there "
                "(another machine backing up to the same prefix? a lifecycle rule?); no "
                "manifest was written, and the next backup starts afresh"
            )

    def _progress(self, source: str, progress: Progress, total_bytes: int) -> None:
        progress.update(total_bytes)
        if self.on_progress is not None:
            self.on_progress(source, progress)

    def _lock(self, row: Backup) -> Lock | None:
        """The lock for ``row``'s objects: the one it began with (a resumed upload keeps it),
        or its chain's now if it began before ``object_lock`` was turned on or if the one it
        began with has ended since (S3 refuses a retain-until in the past; the cycle's
        ``refresh`` then extends the rest of the chain)."""
        lock = self.locks.for_chain(row.date)
        if lock is None or row.locked_until is None:
            return lock
        return Lock(lock.mode, max(row.locked_until, lock.until))

    def _write_manifest(self, backup_id: str, lock: Lock | None) -> tuple[str, str | None]:
        """Store the manifest, the completion marker; returns the completion time it records
        and the manifest's version."""
        catalog = self.repo.catalog
        row = catalog.backup(backup_id)
        assert row is not None
        completed_at = datetime.now(UTC).isoformat(timespec="seconds")
        row = replace(row, state="complete", completed_at=completed_at)
        manifest = Manifest(row, tuple(catalog.volumes(backup_id)))
        stored = self.repo.storage.put_bytes(
            self.repo.layout.manifest_key(row), manifest.to_json(), lock
        )
        return completed_at, stored.version

    # -- what an interruption left -----------------------------------------------------

    def recover(self, source: str, src: SourceConfig | None = None) -> None:
        """Finish what an interruption left: resume or discard uploads, finish deletions.

        An interrupted upload is resumed when its snapshots are still there (``src`` tells
        where; ``backup-stdin`` streams cannot be replayed, so without it they are
        discarded).  A resume that cannot prove the skipped volumes match discards the partial
        backup instead, and the planner then starts afresh.
        """
        repo = self.repo
        for row in repo.catalog.backups(source, states=("uploading",)):
            repo.abort_leftover_uploads(row)
            # Never resume what a clock gone ahead started: that backup is the mistake.
            ahead = row.date > dt.date.today() + dt.timedelta(days=1)
            plan = None if src is None or ahead else resume_plan(repo, self.codec, src, row)
            log = get_logger(source=source, backup_id=row.id)
            if plan is None:
                log.warning(
                    "backup.discarded",
                    reason="interrupted upload that cannot be resumed",
                    date=row.date.isoformat(),
                )
                repo.discard(row)
                continue
            try:
                self._resume(row, *plan)
            except ResumeMismatch as exc:
                log.warning("backup.discarded", reason=str(exc), date=row.date.isoformat())
                repo.discard(row)
        expiring = repo.catalog.backups(source, states=("expiring",))
        # An expiry or a `forget` was interrupted: finish what it decided (or defer it, if
        # the objects turn out locked).
        if expiring and repo.delete_backups(expiring) is None:
            get_logger(source=source).info(
                "backup.deletion_finished", backups=[r.id for r in expiring]
            )
        # Deletions an Object Lock deferred, whose lock may have ended since.
        repo.finish_deferred(source)

    def _resume(
        self, row: Backup, snap: snapshots.Snapshot, parent_snap: snapshots.Snapshot | None
    ) -> Backup:
        """Re-run the same ``btrfs send``, prove the stored volumes match, upload the rest.

        ``btrfs send`` of the same snapshot pair is deterministic, so the raw bytes of each
        recorded volume must hash to what was recorded; anything else means the stream is not
        the one the stored volumes came from.  The skipped bytes pass the stream check too
        (they may have been stored before btrsendd checked streams): if they fail it, the
        stored volumes are worthless and the backup starts afresh.
        """
        repo = self.repo
        done = repo.catalog.volumes(row.id)
        keep = {repo.layout.key(row, v.name) for v in done} | {repo.layout.manifest_key(row)}
        listed = self._listed(row)
        if self.locks.mode is None:
            # Locked, a volume stored unrecorded cannot go: the resumed upload writes a newer
            # version over it, and `verify --clean` removes the old one once its lock ends.
            repo.storage.delete([k for k in listed if k not in keep])
        gone = self._gone(row, listed)
        if gone:
            # Skipping it would complete a backup that cannot be restored.
            raise ResumeMismatch(
                f"stored volume {gone[0].index} is missing from storage, or changed; "
                "starting the backup afresh"
            )
        checker = StreamChecker(
            expected_stream(repo.catalog, row.kind, row.parent_id, snap, parent_snap)
        )
        cmd = send_command(snap.path, None if parent_snap is None else parent_snap.path)
        log = get_logger(source=row.source, backup_id=row.id)
        # Replaying what is stored takes a while on a large backup: its progress is shown too.
        checking = Progress(
            f"{row.source} {row.kind} {row.date}: checking the stored volumes",
            log,
            event="resume.progress",
            total=Total(sum(v.raw_length for v in done)),
        )
        with run_send(cmd) as raw, checking, index_builder(repo) as index:
            # The skipped prefix is indexed too, as it is hashed: the index covers it all.
            stream = _read_through(raw, checker, index)
            for vol in done:
                try:
                    digest = hash_prefix(stream, vol.raw_length, checking.advance)
                except StreamError as exc:
                    raise ResumeMismatch(
                        f"the replayed send stream fails its check ({exc}); starting the "
                        "backup afresh"
                    ) from None
                if digest != vol.raw_sha256:
                    raise ResumeMismatch(
                        f"the send stream differs from stored volume {vol.index}; "
                        "starting the backup afresh"
                    )
            checking.done()
            log.info(
                "backup.resumed",
                date=row.date.isoformat(),
                volumes_skipped=len(done),
                bytes_saved=sum(v.raw_length for v in done),
            )
            return self._store_and_finish(row.id, stream, checker, done, snap, index)


def _read_through(stream: Readable, checker: StreamChecker, index: IndexBuilder | None) -> Readable:
    """``stream`` read through ``checker``, then ``index``: the indexer sees only bytes the
    checker has accepted."""
    passed = checked(stream, checker)
    return passed if index is None else index.tap(passed)

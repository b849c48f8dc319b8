"""The daemon's cycle worker: one thread running the requested backup cycles, one at a time.

A cycle backs up every source one after the other, so two uploads never share the link; a
failing source is logged and recorded and the others go on.  Requests coalesce: any number
of scheduled fire times and SIGUSR1s that arrive before a cycle starts make one cycle;
SIGUSR1s during a forced cycle are already served by it; SIGUSR1s during a scheduled cycle
make exactly one forced cycle after it.

The state directory's cycle lock (``lock.py``) is held only while a cycle runs, so
``btrsendd backup`` by hand works while the daemon idles, and each refuses to start while the
other is mid-cycle.

Stopping: the upload's progress hook raises ``Cancelled`` once the daemon is stopping; the
pipeline stops its stages, the storage abandons the object (S3 aborts the multipart upload),
and the backup is left ``uploading`` (resumed by the next cycle) or discarded if nothing was
stored.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import date

from btrsendd import metrics
from btrsendd.backup import BackupCycle
from btrsendd.config import Config, SourceConfig
from btrsendd.daemon.publisher import Publisher
from btrsendd.daemon.state import CycleRecord, SourceRecord, now
from btrsendd.errors import BtrsenddError, Stopped
from btrsendd.interrupt import Cancelled
from btrsendd.interruptions import read_interruptions
from btrsendd.log import get_logger
from btrsendd.progress import Progress
from btrsendd.repository import Repository, open_repository

#: Seconds between updates of the published state and STATUS= during an upload.
PUBLISH_EVERY = 2.0


class CycleWorker:
    """Runs cycles as they are requested, until ``stopping`` is set.

    ``config`` gives the configuration in force; it is read once per cycle, so a reload
    applies from the next cycle on and a cycle never runs half on the old configuration
    and half on the new.
    """

    def __init__(
        self, published: Publisher, config: Callable[[], Config], stopping: threading.Event
    ) -> None:
        self.published = published
        self.config = config
        self.stopping = stopping
        #: The signal that set ``stopping``, for what the stopped upload records.
        self.stop_signal = "SIGTERM"
        self.log = get_logger()
        self._wake = threading.Condition()  # guards the requests below
        self._pending_scheduled = False
        self._pending_forced = False
        self._running_forced: bool | None = None  # None: no cycle is running

    # -- requests (any thread) -----------------------------------------------------------

    def request(self, *, forced: bool) -> None:
        """Ask for a cycle, coalescing with what is pending or running."""
        with self._wake:
            if forced and (self._pending_forced or self._running_forced):
                self.log.info("cycle.coalesced", trigger="signal")
                return
            if forced:
                self._pending_forced = True
            else:
                self._pending_scheduled = True
            self._wake.notify()
        self.log.info("cycle.requested", trigger="signal" if forced else "schedule")

    def wake(self) -> None:
        """Have an idle worker look at ``stopping`` again."""
        with self._wake:
            self._wake.notify_all()

    # -- the worker thread -----------------------------------------------------------------

    def serve(self) -> None:
        """The thread's body: wait for a request, run its cycle, until stopping."""
        # Children (btrfs send, the compressor, gpg) inherit this thread's signal mask.
        # `systemctl kill -s USR1 btrsendd` signals every process of the unit, and USR1 or HUP
        # would kill them mid-upload; blocked here, the signals stay pending in the children
        # and only the main thread (which leaves them unblocked) acts on them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGHUP})
        while True:
            with self._wake:
                while not (
                    self.stopping.is_set() or self._pending_forced or self._pending_scheduled
                ):
                    self._wake.wait()
                if self.stopping.is_set():
                    return
                forced = self._pending_forced
                self._pending_forced = self._pending_scheduled = False
                self._running_forced = forced
            try:
                self._cycle(forced=forced)
            finally:
                with self._wake:
                    self._running_forced = None
                with self.published.lock:
                    self.published.state.cycle = None
                self.published.publish("stopping" if self.stopping.is_set() else "idle")

    def _cycle(self, *, forced: bool) -> None:
        """One cycle over every source; a failing source is logged and the others go on."""
        config = self.config()
        started = now()
        day = date.today()
        trigger = "signal" if forced else "schedule"
        with self.published.lock:
            self.published.state.cycle = CycleRecord(trigger, day.isoformat(), started.isoformat())
        self.published.publish("running")
        log = self.log.bind(trigger=trigger)
        log.info("cycle.started", date=day.isoformat(), force=forced)
        results: dict[str, str] = {}
        try:
            with open_repository(config, lock="daemon cycle") as repo:
                cycle = BackupCycle(repo, self._on_progress)
                for src in config.sources:
                    if self.stopping.is_set():
                        break
                    results[src.name] = self._source(cycle, src, day, forced)
                self._write_metrics(config, repo)
        except BtrsenddError as exc:
            # The engine did not open: the catalog, or `btrsendd backup` holding the lock.
            log.error("cycle.failed", reason=str(exc), detail="retried at the next run")
            return
        if len(results) < len(config.sources) or "aborted" in results.values():
            log.warning("cycle.aborted", reason="the daemon is stopping", results=results)
            return
        log.info(
            "cycle.finished",
            duration=round((now() - started).total_seconds(), 3),
            results=results,
        )
        with self.published.lock:
            # What catch-up compares with; a forced cycle does all a scheduled one would.
            self.published.state.last_scheduled = started.isoformat()

    def _source(self, cycle: BackupCycle, src: SourceConfig, day: date, forced: bool) -> str:
        """Run one source's cycle; returns what happened, in words, for the cycle's summary."""
        name = src.name
        state = self.published.state
        with self.published.lock:
            record = state.sources.setdefault(name, SourceRecord())
            if state.cycle is not None:
                state.cycle.source = name
                state.cycle.bytes = 0
                state.cycle.rate = 0.0
                state.cycle.total = state.cycle.estimate = state.cycle.eta = None
        self.published.publish("running")
        started = now().isoformat()
        error: str | None = None
        try:
            outcome = cycle.run(src, day, force=forced)
        except Stopped:
            # Not a failure: the upload recorded what it left (`interruptions.py`).  An error
            # that happens while the daemon is stopping is still one, and reported as one.
            with self.published.lock:
                record.last_run_at = started
                record.last_result = f"interrupted: the daemon was stopped by {self.stop_signal}"
            return "aborted"
        except BtrsenddError as exc:
            self.log.error("backup.failed", source=name, reason=str(exc))
            result, error = "failed", str(exc)
        except Exception as exc:  # a bug in one source must not stop the others or the daemon
            self.log.exception("backup.failed", source=name, reason=f"internal error: {exc!r}")
            result, error = "failed", f"internal error: {exc!r}"
        else:
            result = "backed up" if outcome.backup_id else "no backup due"
        with self.published.lock:
            record.last_run_at = started
            record.last_result = result
            if error is None:
                record.last_success_at = started
                record.uploaded_bytes += outcome.raw_bytes
            else:
                record.last_error, record.last_error_at = error, started
                record.failures += 1
        return result

    def _write_metrics(self, config: Config, repo: Repository) -> None:
        """Rewrite the Prometheus textfile, if configured; a failure is logged, not fatal."""
        path = config.metrics.textfile
        if path is None:
            return
        # Interruptions are recorded by whoever was interrupted, `btrsendd backup` too.
        stops = read_interruptions(config.state_dir)
        facts = {}
        with self.published.lock:
            records = self.published.state.sources
            for name in sorted(records.keys() | stops.keys()):
                r = records.get(name, SourceRecord())
                facts[name] = metrics.SourceFacts(
                    r.last_run_at, r.last_success_at, r.failures, r.uploaded_bytes, stops.get(name)
                )
        try:
            metrics.write_textfile(path, metrics.render(facts, repo.catalog.backups()))
        except OSError as exc:
            self.log.warning("metrics.failed", path=str(path), reason=str(exc))

    def _on_progress(self, source: str, progress: Progress) -> None:
        """The upload's progress hook: abort on stop; publish bytes and rate when the upload
        starts, then every few seconds."""
        if self.stopping.is_set():
            raise Cancelled(self.stop_signal)
        cycle = self.published.state.cycle
        first = cycle is not None and cycle.bytes == 0
        if not first and time.monotonic() - self.published.last_publish < PUBLISH_EVERY:
            return
        with self.published.lock:
            cycle = self.published.state.cycle
            if cycle is not None:
                cycle.source = source
                cycle.bytes = progress.bytes
                cycle.rate = progress.rate
                total = progress.total
                cycle.total = None if total is None else total.bytes
                cycle.estimate = None if total is None else total.basis
                cycle.eta = progress.eta
        self.published.publish("running")

"""``btrsendd run``: the daemon, and ``btrsendd trigger``, which talks to it.

Threads and who does what:

- The **main thread** owns signals.  Handlers do nothing but let ``signal.set_wakeup_fd``
  write the signal number to a pipe; the main loop reads the pipe and acts (SIGUSR1: request
  a forced cycle; SIGHUP: reload; SIGTERM/SIGINT: stop).  Nothing runs inside a handler, so
  no lock can be taken twice by a handler interrupting its own thread.
- APScheduler's **BackgroundScheduler** fires a CronTrigger built from ``schedule.cron``; its
  job only *requests* a cycle.
- One **cycle worker** runs the requested cycles, all sources one after the other, so two
  uploads never share the link.  Requests coalesce: any number of scheduled fire times and
  SIGUSR1s that arrive before a cycle starts make one cycle; SIGUSR1s during a forced cycle
  are already served by it; SIGUSR1s during a scheduled cycle make exactly one forced cycle
  after it.
- A **watchdog** thread pings systemd (``WATCHDOG=1``) at half ``WatchdogSec``, but only
  while the main loop's heartbeat is fresh: a wedged main loop stops the pings and systemd
  restarts the service.

Locks: ``<state_dir>/daemon.lock`` is held for the daemon's whole life (a second daemon on the
same state directory exits 2).  The state directory's cycle lock (``lock.py``) is held only
while a cycle runs, so ``btrsendd backup`` by hand works while the daemon idles, and each
refuses to start while the other is mid-cycle.

Catch-up: the start of the last completed scheduled cycle is kept in the published state
(``daemon.json``); at start-up, if a scheduled time passed since then (the machine was off
or the daemon stopped), one cycle runs at once.

Stopping: SIGTERM sets a flag the upload's progress callback checks; it raises, the
pipeline stops its stages, the storage abandons the object (S3 aborts the multipart
upload), and the backup is left ``uploading`` (resumed by the next cycle) or discarded if
nothing was stored.  If the cycle has not ended after ``STOP_GRACE`` seconds (a stalled
network call), the daemon exits anyway; the next cycle's ``recover`` finishes the job.

The trigger comes from ``cron.py``, as for ``status`` and ``check-config``: an expression that
cannot run is a configuration error (exit 2 at start, the old schedule kept on SIGHUP).
Tests and demos need cycles seconds apart: ``BTRSENDD_TEST_CRON_SECONDS=N`` replaces
``schedule.cron`` by a CronTrigger firing every N seconds, and says so in the log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from tzlocal import get_localzone

from btrsendd import __version__, metrics
from btrsendd.backup import BackupCycle
from btrsendd.config import Config, SourceConfig, config_path, load_config
from btrsendd.cron import TEST_CRON_ENV, schedule_trigger
from btrsendd.errors import BtrsenddError, ConfigError, OperationalError
from btrsendd.lock import daemon_lock
from btrsendd.log import get_logger
from btrsendd.notify import Notifier
from btrsendd.permissions import config_file_problem
from btrsendd.progress import Progress, human_bytes
from btrsendd.repository import Repository, open_repository

STATE_FILE = "daemon.json"

#: Seconds a stopping daemon waits for its cycle to end; the unit's TimeoutStopSec (90 s)
#: leaves room for the rest of the shutdown after it.
STOP_GRACE = 60.0

#: Seconds between updates of the published state and STATUS= during an upload.
PUBLISH_EVERY = 2.0

#: The longest the main loop sleeps.  Each time it wakes it has the scheduler re-read the
#: wall clock: APScheduler sleeps on the monotonic clock, which stands still while the
#: machine is suspended, so a run due during a suspend would otherwise wait that long again.
IDLE_WAKE = 60.0

# -- the schedule ----------------------------------------------------------------------------


def format_time(when: datetime) -> str:
    """``2026-11-27 00:00`` (seconds only when they matter), local time."""
    local = when.astimezone(get_localzone())
    return local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")


def _now() -> datetime:
    return datetime.now(get_localzone())


# -- the published state -------------------------------------------------------------------


@dataclass
class SourceRecord:
    """What the daemon last saw for one source; kept across restarts for ``status``."""

    last_run_at: str | None = None
    last_result: str | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    failures: int = 0
    uploaded_bytes: int = 0


_RECORD_FIELDS = frozenset(f.name for f in fields(SourceRecord))


@dataclass
class CycleRecord:
    """The cycle running now, with the upload's progress once one is under way."""

    trigger: str
    date: str
    started_at: str
    source: str | None = None
    bytes: int = 0
    rate: float = 0.0


@dataclass
class PublishedState:
    """``<state_dir>/daemon.json``: what ``status`` and ``trigger`` know about the daemon."""

    pid: int
    version: str
    config: str
    started_at: str
    state: str = "starting"
    status: str = "starting"
    next_run: str | None = None
    last_scheduled: str | None = None
    cycle: CycleRecord | None = None
    sources: dict[str, SourceRecord] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "updated_at": _now().isoformat()}, indent=2)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The last state a daemon published in ``state_dir``, or None (none, or unreadable)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_state(state_dir: Path, state: PublishedState) -> None:
    """Replace the state file atomically, so a reader never sees half of it."""
    path = state_dir / STATE_FILE
    temp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as out:
        out.write(state.to_json())
    os.replace(temp, path)


def is_daemon_process(pid: int) -> bool:
    """Whether ``pid`` is a running ``btrsendd run``: a stale state file may name a pid
    that now belongs to some other process, which must never be signalled."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    for i, arg in enumerate(argv):
        if Path(arg).name == "btrsendd":
            return "run" in argv[i + 1 :]
    return False


def live_pid(state: dict[str, Any] | None) -> int | None:
    """The pid of the daemon that published ``state``, if it is still running."""
    if state is None or state.get("state") == "stopped":
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not is_daemon_process(pid):
        return None
    return pid


def running_daemon(state_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """The pid and published state of the daemon running on ``state_dir``, if one is."""
    state = read_state(state_dir)
    pid = live_pid(state)
    return None if pid is None or state is None else (pid, state)


# -- the daemon ------------------------------------------------------------------------------


class Cancelled(OperationalError):
    """Raised into a running upload when the daemon is asked to stop."""


class Daemon:
    """The running daemon: its scheduler, its cycle worker and what it publishes.

    The configuration is swapped whole on reload; the worker reads it once per cycle, so a
    cycle never runs half on the old configuration and half on the new.
    """

    def __init__(self, path: Path, config: Config, notifier: Notifier) -> None:
        self.path = path
        self.config = config
        self.notifier = notifier
        self.log = get_logger()
        self.trigger = schedule_trigger(config)
        self.scheduler = BackgroundScheduler(
            timezone=get_localzone(),
            # The job only posts a request, so a late fire time (a suspended machine) is
            # always worth running, and any number of missed ones count as one.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        previous = read_state(config.state_dir) or {}
        self.state = PublishedState(
            pid=os.getpid(),
            version=__version__,
            config=str(path.absolute()),
            started_at=_now().isoformat(),
            last_scheduled=previous.get("last_scheduled"),
            sources={
                name: SourceRecord(**{k: v for k, v in record.items() if k in _RECORD_FIELDS})
                for name, record in (previous.get("sources") or {}).items()
                if isinstance(record, dict)
            },
        )
        self._lock = threading.Lock()  # guards self.state and the requests below
        self._wake = threading.Condition(self._lock)
        self._pending_scheduled = False
        self._pending_forced = False
        self._running_forced: bool | None = None  # None: no cycle is running
        self._stop = threading.Event()
        self._exit = threading.Event()
        self._heartbeat = time.monotonic()
        self._last_publish = 0.0

    # -- requests (any thread) -----------------------------------------------------------

    def request_cycle(self, *, forced: bool) -> None:
        """Ask the worker for a cycle, coalescing with what is pending or running."""
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

    def _scheduled(self) -> None:
        self.request_cycle(forced=False)

    # -- the cycle worker ------------------------------------------------------------------

    def _work(self) -> None:
        # Children (btrfs send, the compressor, gpg) inherit this thread's signal mask.
        # `systemctl kill -s USR1 btrsendd` signals every process of the unit, and USR1 or HUP
        # would kill them mid-upload; blocked here, the signals stay pending in the children
        # and only the main thread (which leaves them unblocked) acts on them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGHUP})
        while True:
            with self._wake:
                while not (self._stop.is_set() or self._pending_forced or self._pending_scheduled):
                    self._wake.wait()
                if self._stop.is_set():
                    return
                forced = self._pending_forced
                self._pending_forced = self._pending_scheduled = False
                self._running_forced = forced
            try:
                self._cycle(forced=forced)
            finally:
                with self._lock:
                    self._running_forced = None
                    self.state.cycle = None
                self.publish("stopping" if self._stop.is_set() else "idle")

    def _cycle(self, *, forced: bool) -> None:
        """One cycle over every source; a failing source is logged and the others go on."""
        config = self.config  # a reload applies from the next cycle on
        started = _now()
        day = date.today()
        trigger = "signal" if forced else "schedule"
        with self._lock:
            self.state.cycle = CycleRecord(trigger, day.isoformat(), started.isoformat())
        self.publish("running")
        log = self.log.bind(trigger=trigger)
        log.info("cycle.started", date=day.isoformat(), force=forced)
        results: dict[str, str] = {}
        try:
            with open_repository(config, lock="daemon cycle") as repo:
                cycle = BackupCycle(repo, self._on_progress)
                for src in config.sources:
                    if self._stop.is_set():
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
            duration=round((_now() - started).total_seconds(), 3),
            results=results,
        )
        with self._lock:
            # What catch-up compares with; a forced cycle does all a scheduled one would.
            self.state.last_scheduled = started.isoformat()

    def _source(self, cycle: BackupCycle, src: SourceConfig, day: date, forced: bool) -> str:
        """Run one source's cycle; returns what happened, in words, for the cycle's summary."""
        name = src.name
        with self._lock:
            record = self.state.sources.setdefault(name, SourceRecord())
            if self.state.cycle is not None:
                self.state.cycle.source = name
                self.state.cycle.bytes = 0
                self.state.cycle.rate = 0.0
        self.publish("running")
        now = _now().isoformat()
        error: str | None = None
        try:
            outcome = cycle.run(src, day, force=forced)
        except BtrsenddError as exc:
            if self._stop.is_set():
                return "aborted"
            self.log.error("backup.failed", source=name, reason=str(exc))
            result, error = "failed", str(exc)
        except Exception as exc:  # a bug in one source must not stop the others or the daemon
            self.log.exception("backup.failed", source=name, reason=f"internal error: {exc!r}")
            result, error = "failed", f"internal error: {exc!r}"
        else:
            result = "backed up" if outcome.backup_id else "no backup due"
        with self._lock:
            record.last_run_at = now
            record.last_result = result
            if error is None:
                record.last_success_at = now
                record.uploaded_bytes += outcome.raw_bytes
            else:
                record.last_error, record.last_error_at = error, now
                record.failures += 1
        return result

    def _write_metrics(self, config: Config, repo: Repository) -> None:
        """Rewrite the Prometheus textfile, if configured; a failure is logged, not fatal."""
        path = config.metrics.textfile
        if path is None:
            return
        with self._lock:
            facts = {
                name: metrics.SourceFacts(
                    r.last_run_at, r.last_success_at, r.failures, r.uploaded_bytes
                )
                for name, r in self.state.sources.items()
            }
        try:
            metrics.write_textfile(path, metrics.render(facts, repo.catalog.backups()))
        except OSError as exc:
            self.log.warning("metrics.failed", path=str(path), reason=str(exc))

    def _on_progress(self, source: str, progress: Progress) -> None:
        """The upload's progress hook: abort on stop; publish bytes and rate when the upload
        starts, then every few seconds."""
        if self._stop.is_set():
            raise Cancelled("the daemon is stopping; the upload was interrupted")
        first = self.state.cycle is not None and self.state.cycle.bytes == 0
        if not first and time.monotonic() - self._last_publish < PUBLISH_EVERY:
            return
        with self._lock:
            if self.state.cycle is not None:
                self.state.cycle.source = source
                self.state.cycle.bytes = progress.bytes
                self.state.cycle.rate = progress.rate
        self.publish("running")

    # -- publishing ------------------------------------------------------------------------

    def _status_line(self, nxt: datetime | None) -> str:
        cycle = self.state.cycle
        if self.state.state == "stopping":
            return "stopping" + (f": interrupting {cycle.source}" if cycle and cycle.source else "")
        if cycle is None:
            return "idle, next run " + (format_time(nxt) if nxt else "never")
        if cycle.source is None:
            return f"starting a cycle ({cycle.trigger})"
        if cycle.bytes:
            return (
                f"uploading {cycle.source} {human_bytes(cycle.bytes)} "
                f"at {human_bytes(cycle.rate)}/s"
            )
        return f"backing up {cycle.source} ({cycle.trigger})"

    def publish(self, state: str) -> None:
        """Write ``daemon.json`` and tell systemd (STATUS=) what the daemon is doing."""
        with self._lock:
            self.state.state = state
            nxt = self.trigger.get_next_fire_time(None, _now())
            self.state.next_run = None if nxt is None else nxt.isoformat()
            self.state.status = self._status_line(nxt)
            self._last_publish = time.monotonic()
            try:
                _write_state(self.config.state_dir, self.state)
            except OSError as exc:
                self.log.warning("daemon.state_unwritten", error=str(exc))
            status = self.state.status
        self.notifier.status(status)

    # -- the main thread -------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Request one cycle now if a scheduled time passed while no daemon ran."""
        last = self.state.last_scheduled
        try:
            since = None if last is None else datetime.fromisoformat(last)
        except ValueError:
            since = None
        if since is None:
            # The first start on this state directory: nothing was missed.
            with self._lock:
                self.state.last_scheduled = _now().isoformat()
            return
        missed = self.trigger.get_next_fire_time(None, since)
        if missed is not None and missed <= _now():
            self.log.info("cycle.catch_up", missed=missed.isoformat(), last_cycle=last)
            self.request_cycle(forced=False)

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            # As at start (cli.main): a file moved into place keeps its owner, and whoever
            # can change it steers root.
            problem = config_file_problem(self.path)
            if problem is not None and problem.refuse:
                raise ConfigError(f"{self.path}: {problem.message}")
            config = load_config(self.path)
            if config.state_dir != self.config.state_dir:
                raise ConfigError(
                    f"{self.path}: state_dir: changing it needs a restart "
                    f"(systemctl restart btrsendd); still using {self.config.state_dir}"
                )
            trigger = schedule_trigger(config)
        except ConfigError as exc:
            self.log.error(
                "config.reload_failed", error=str(exc), detail="keeping the previous configuration"
            )
        else:
            self.config, self.trigger = config, trigger
            self.scheduler.reschedule_job("cycle", trigger=trigger)
            self.log.info(
                "config.reloaded",
                config=str(self.path),
                cron=config.schedule.cron,
                sources=[s.name for s in config.sources],
            )
        self.publish("idle" if self.state.cycle is None else "running")
        self.notifier.ready(self.state.status)

    def _watchdog(self, interval: float) -> None:
        """Ping systemd while the main loop is alive (its heartbeat younger than 2 pings)."""
        while not self._exit.wait(interval):
            if time.monotonic() - self._heartbeat < 2 * interval:
                self.notifier.watchdog()

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit status (0: a clean stop)."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        handled = (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        for signum in handled:
            signal.signal(signum, lambda *_: None)
        interval = self.notifier.watchdog_interval
        wake = IDLE_WAKE if interval is None else min(interval, IDLE_WAKE)
        worker = threading.Thread(target=self._work, name="btrsendd-cycle", daemon=True)
        self.scheduler.add_job(self._scheduled, self.trigger, id="cycle", name="backup cycle")
        self.scheduler.start()
        worker.start()
        if interval is not None:
            threading.Thread(
                target=self._watchdog, args=(interval,), name="btrsendd-watchdog", daemon=True
            ).start()
        if os.environ.get(TEST_CRON_ENV):
            self.log.warning("daemon.test_schedule", every=f"{os.environ[TEST_CRON_ENV]} s")
        self._catch_up()
        self.publish("idle" if self.state.cycle is None else "running")
        self.log.info(
            "daemon.started",
            pid=os.getpid(),
            version=__version__,
            config=str(self.path),
            sources=[s.name for s in self.config.sources],
            cron=self.config.schedule.cron,
            next_run=self.state.next_run,
            watchdog=interval,
        )
        self.notifier.ready(self.state.status)
        while True:
            self._heartbeat = time.monotonic()
            select.select([read_fd], [], [], wake)
            self.scheduler.wakeup()
            with contextlib.suppress(BlockingIOError):
                received = os.read(read_fd, 512)
                stop = [s for s in received if s in (signal.SIGTERM, signal.SIGINT)]
                if stop:
                    return self._shutdown(signal.Signals(stop[0]).name, worker)
                for number in received:
                    if number == signal.SIGHUP:
                        self._reload()
                    elif number == signal.SIGUSR1:
                        self.request_cycle(forced=True)

    def _shutdown(self, signame: str, worker: threading.Thread) -> int:
        self.log.info("daemon.stopping", signal=signame)
        self._stop.set()
        self.publish("stopping")
        self.notifier.stopping(self.state.status)
        self.scheduler.shutdown(wait=False)
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + STOP_GRACE
        while worker.is_alive() and time.monotonic() < deadline:
            self._heartbeat = time.monotonic()
            worker.join(timeout=1.0)
        if worker.is_alive():
            self.log.warning(
                "daemon.stop_timeout",
                detail=f"the cycle did not stop within {STOP_GRACE:.0f} s; its backup stays "
                "'uploading' and the next cycle resumes or discards it",
            )
        self._exit.set()
        self.publish("stopped")
        self.log.info("daemon.stopped")
        return 0


def cmd_run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load_config(path)
    notifier = Notifier.from_environment()
    with daemon_lock(config.state_dir):
        return Daemon(path, config, notifier).run()


def cmd_trigger(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    found = running_daemon(config.state_dir)
    if found is None:
        print(
            f"btrsendd: no daemon is running on {config.state_dir}; start it "
            "(systemctl start btrsendd) or back up now with `btrsendd backup --force`",
            file=sys.stderr,
        )
        return 1
    pid, state = found
    os.kill(pid, signal.SIGUSR1)
    cycle = state.get("cycle") or {}
    when = {
        None: "now",
        "signal": "(it is already running a forced one)",
        "schedule": "after the scheduled one it is running",
    }.get(cycle.get("trigger"), "now")
    print(
        f"btrsendd daemon (pid {pid}) is running: asked it for a backup cycle {when}; "
        "follow it with `btrsendd status` or `journalctl -u btrsendd -f`"
    )
    return 0

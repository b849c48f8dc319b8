"""The running daemon (``btrsendd run``): its main loop, signals, schedule and watchdog.

Threads and who does what:

- The **main thread** owns signals.  Handlers do nothing but let ``signal.set_wakeup_fd``
  write the signal number to a pipe; the main loop reads the pipe and acts (SIGUSR1: request
  a forced cycle; SIGHUP: reload; SIGTERM/SIGINT: stop).  Nothing runs inside a handler, so
  no lock can be taken twice by a handler interrupting its own thread.
- APScheduler's **BackgroundScheduler** fires the trigger ``cron.py`` builds from
  ``schedule.cron``; its job only *requests* a cycle.
- One **cycle worker** (``worker.py``) runs the requested cycles.
- A **watchdog** thread pings systemd (``WATCHDOG=1``) at half ``WatchdogSec``, but only
  while the main loop's heartbeat is fresh: a wedged main loop stops the pings and systemd
  restarts the service.

What the daemon does is published (``publisher.py``) in ``<state_dir>/daemon.json``
(``state.py``) and as systemd's STATUS=.

Locks: ``<state_dir>/daemon.lock`` is held for the daemon's whole life (a second daemon on the
same state directory exits 2), by ``btrsendd run`` (``cli/run.py``).

Catch-up: the start of the last completed scheduled cycle is kept in the published state; at
start-up, if a scheduled time passed since then (the machine was off or the daemon stopped),
one cycle runs at once.

Stopping: SIGTERM has the running upload abandoned (``worker.py``).  If the cycle has not
ended after ``STOP_GRACE`` seconds (a stalled network call), the daemon exits anyway; the next
cycle's ``recover`` finishes the job.

The schedule comes from ``cron.py``, as for ``status`` and ``check-config``: an expression that
cannot run is a configuration error (exit 2 at start, the old schedule kept on SIGHUP).
Tests and demos need cycles seconds apart: ``BTRSENDD_TEST_CRON_SECONDS=N`` replaces
``schedule.cron`` by a trigger firing every N seconds, and says so in the log.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from tzlocal import get_localzone

from btrsendd import __version__
from btrsendd.config import Config, load_config
from btrsendd.cron import TEST_CRON_ENV, schedule_trigger
from btrsendd.daemon.publisher import Publisher
from btrsendd.daemon.state import PublishedState, now, read_state
from btrsendd.daemon.worker import CycleWorker
from btrsendd.errors import ConfigError
from btrsendd.log import get_logger
from btrsendd.notify import Notifier
from btrsendd.permissions import config_file_problem

#: Seconds a stopping daemon waits for its cycle to end; the unit's TimeoutStopSec (90 s)
#: leaves room for the rest of the shutdown after it.
STOP_GRACE = 60.0

#: The longest the main loop sleeps.  Each time it wakes it has the scheduler re-read the
#: wall clock: APScheduler sleeps on the monotonic clock, which stands still while the
#: machine is suspended, so a run due during a suspend would otherwise wait that long again.
IDLE_WAKE = 60.0


class Daemon:
    """The running daemon: its scheduler, its cycle worker and what it publishes.

    The configuration is swapped whole on reload; the worker reads it once per cycle.
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
        previous = read_state(config.state_dir)
        state = PublishedState(
            pid=os.getpid(),
            version=__version__,
            config=str(path.absolute()),
            started_at=now().isoformat(),
            last_scheduled=None if previous is None else previous.last_scheduled,
            sources={} if previous is None else previous.sources,
        )
        self.published = Publisher(config.state_dir, state, notifier, self._next_run)
        self._stop = threading.Event()
        self.worker = CycleWorker(self.published, lambda: self.config, self._stop)
        self._exit = threading.Event()
        self._heartbeat = time.monotonic()

    def _next_run(self) -> datetime | None:
        fire: datetime | None = self.trigger.get_next_fire_time(None, now())
        return fire

    def _scheduled(self) -> None:
        self.worker.request(forced=False)

    def _publish_current(self) -> None:
        with self.published.lock:
            running = self.published.state.cycle is not None
        self.published.publish("running" if running else "idle")

    def _catch_up(self) -> None:
        """Request one cycle now if a scheduled time passed while no daemon ran."""
        last = self.published.state.last_scheduled
        try:
            since = None if last is None else datetime.fromisoformat(last)
        except ValueError:
            since = None
        if since is None:
            # The first start on this state directory: nothing was missed.
            with self.published.lock:
                self.published.state.last_scheduled = now().isoformat()
            return
        missed = self.trigger.get_next_fire_time(None, since)
        if missed is not None and missed <= now():
            self.log.info("cycle.catch_up", missed=missed.isoformat(), last_cycle=last)
            self.worker.request(forced=False)

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            # As at start (cli/common.py): a file moved into place keeps its owner, and whoever
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
        self._publish_current()
        self.notifier.ready(self.published.state.status)

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
        worker = threading.Thread(target=self.worker.serve, name="btrsendd-cycle", daemon=True)
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
        self._publish_current()
        self.log.info(
            "daemon.started",
            pid=os.getpid(),
            version=__version__,
            config=str(self.path),
            sources=[s.name for s in self.config.sources],
            cron=self.config.schedule.cron,
            next_run=self.published.state.next_run,
            watchdog=interval,
        )
        self.notifier.ready(self.published.state.status)
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
                        self.worker.request(forced=True)

    def _shutdown(self, signame: str, worker: threading.Thread) -> int:
        self.log.info("daemon.stopping", signal=signame)
        self.worker.stop_signal = signame
        self._stop.set()
        self.published.publish("stopping")
        self.notifier.stopping(self.published.state.status)
        self.scheduler.shutdown(wait=False)
        self.worker.wake()
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
        self.published.publish("stopped")
        self.log.info("daemon.stopped")
        return 0

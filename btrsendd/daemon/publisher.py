"""The daemon's state as its threads share it, and publishing it: ``daemon.json`` and STATUS=.

The main thread, the cycle worker and the upload's progress hook all change the state;
each change is made under ``Publisher.lock``, and ``publish`` writes the whole of it out
(``state.py``) and gives systemd the same one-line status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from btrsendd.daemon.state import PublishedState, format_time, write_state
from btrsendd.log import get_logger
from btrsendd.notify import Notifier
from btrsendd.progress import summary


class Publisher:
    """``state``, guarded by ``lock``; ``next_run`` asks the schedule for its next run."""

    def __init__(
        self,
        state_dir: Path,
        state: PublishedState,
        notifier: Notifier,
        next_run: Callable[[], datetime | None],
    ) -> None:
        self.state_dir = state_dir
        self.state = state
        self.notifier = notifier
        self.next_run = next_run
        self.lock = threading.Lock()
        #: ``time.monotonic()`` of the last publish: the progress hook publishes every few
        #: seconds, not on every block.
        self.last_publish = 0.0
        self.log = get_logger()

    def _status_line(self, nxt: datetime | None) -> str:
        cycle = self.state.cycle
        if self.state.state == "stopping":
            return "stopping" + (f": interrupting {cycle.source}" if cycle and cycle.source else "")
        if cycle is None:
            return "idle, next run " + (format_time(nxt) if nxt else "never")
        if cycle.source is None:
            return f"starting a cycle ({cycle.trigger})"
        if cycle.bytes:
            return f"uploading {cycle.source} " + summary(
                cycle.bytes, cycle.rate, cycle.progress(), cycle.eta
            )
        return f"backing up {cycle.source} ({cycle.trigger})"

    def publish(self, state: str) -> None:
        """Write ``daemon.json`` and tell systemd (STATUS=) what the daemon is doing."""
        with self.lock:
            self.state.state = state
            nxt = self.next_run()
            self.state.next_run = None if nxt is None else nxt.isoformat()
            self.state.status = self._status_line(nxt)
            self.last_publish = time.monotonic()
            try:
                write_state(self.state_dir, self.state)
            except OSError as exc:
                self.log.warning("daemon.state_unwritten", error=str(exc))
            status = self.state.status
        self.notifier.status(status)

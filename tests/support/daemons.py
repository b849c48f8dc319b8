"""A real ``btrsendd run`` process for the tests, and how to wait for what it logs.

The daemon logs JSON lines to a file, and the tests wait for its events (``cycle.started``,
``backup.completed``, ...) rather than for fixed times, so they are quick on a fast machine
and still pass on a slow one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

from tests.support.world import BTRSENDD, World

Event = dict[str, Any]


class Daemon:
    """One ``btrsendd run`` process and its log."""

    def __init__(self, world: World, env: dict[str, str] | None = None) -> None:
        world.write_config()
        self.log = world.work / f"daemon-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [BTRSENDD, "--config", str(world.config), "--log-format", "json", "run"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, **world.env, **(env or {})},
            )
        self.wait_for("daemon.started")

    def events(self, name: str | None = None, **fields: Any) -> list[Event]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (name is None or event.get("event") == name) and all(
                event.get(k) == v for k, v in fields.items()
            ):
                found.append(event)
        return found

    def wait_for(self, name: str, count: int = 1, timeout: float = 60, **fields: Any) -> Event:
        """The ``count``-th event ``name`` with ``fields``, once it is logged."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name, **fields)) < count:
            if self.proc.poll() is not None and len(self.events(name, **fields)) < count:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} {fields} (x{count}) in time:\n{self.log_text}")
            time.sleep(0.05)
        return found[count - 1]

    @property
    def log_text(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

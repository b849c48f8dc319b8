"""Progress of long transfers: bytes so far and rate, and where the total is known (or can be
estimated) percent and ETA.

On a terminal it is the status line (``terminal.py``), redrawn in place a few times a second;
log lines are written above it, never across it.  Elsewhere (the journal, a file, a pipe) a log
event (``upload.progress``, ``restore.progress``) carries the same numbers every ``log_every``
seconds; on a terminal that event would only repeat the line, so it is not logged there.

A backup's total is not known before its stream has ended: it is estimated (``Total.basis``
says from what), and shown with a ``~``.  A restore's total is exact: the chain's raw bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from btrsendd.terminal import StatusLine, status_line
from btrsendd.units import clock, human_bytes

#: Seconds between redraws of the status line: often enough to look alive, rarely enough to
#: cost nothing.
REDRAW_EVERY = 0.25


@dataclass(frozen=True)
class Total:
    """How many bytes the transfer will have moved when it ends."""

    bytes: int
    #: Where an estimate comes from ("the last full backup, 2026-11-01"); None: exact.
    basis: str | None = None

    @property
    def estimated(self) -> bool:
        return self.basis is not None

    def percent(self, done: int) -> int | None:
        """Whole percent of it ``done`` is; None past an estimate (it was too low)."""
        if self.estimated and done > self.bytes:
            return None
        return 100 if self.bytes <= 0 else min(100, done * 100 // self.bytes)


def summary(done: int, rate: float, total: Total | None, eta: float | None) -> str:
    """``2.1 MiB of 8.0 MiB (26%) at 1.0 MiB/s, ETA 0:00:06``, as far as each is known; an
    estimated total and its ETA carry a ``~``."""
    about = "~" if total is not None and total.estimated else ""
    text = human_bytes(done)
    if total is not None:
        percent = total.percent(done)
        text += (
            f" (past the ~{human_bytes(total.bytes)} estimated)"
            if percent is None
            else f" of {about}{human_bytes(total.bytes)} ({about}{percent}%)"
        )
    if rate > 0:
        text += f" at {human_bytes(rate)}/s"
    if eta is not None:
        text += f", ETA {about}{clock(eta)}"
    return text


class Progress:
    """One transfer's progress, fed by ``update(bytes_so_far)`` from any thread.

    ``start`` is where a resumed transfer begins: its bytes count towards the total but not
    towards the rate (they were not moved now), so the ETA is that of what remains.
    """

    def __init__(
        self,
        label: str,
        log: Any,
        *,
        event: str = "upload.progress",
        total: Total | None = None,
        start: int = 0,
        volumes: int | None = None,
        log_every: float = 30.0,
        line: StatusLine | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.start = start
        self.bytes = start
        self._log = log
        self._event = event
        self._line = status_line() if line is None else line
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_log = self._started
        self._log_every = log_every
        #: How many volumes the transfer has, if it counts them (``next_volume``).
        self.volumes = volumes
        self.volume = 0
        self._draw(time.monotonic())

    @property
    def rate(self) -> float:
        """Bytes per second moved by this run, since it started."""
        return (self.bytes - self.start) / max(time.monotonic() - self._started, 1e-6)

    @property
    def percent(self) -> int | None:
        """Whole percent done; None without a total, or past an estimate."""
        return None if self.total is None else self.total.percent(self.bytes)

    @property
    def eta(self) -> float | None:
        """Seconds until the total is reached at the rate so far; None if unknown."""
        rate = self.rate
        if self.total is None or self.percent is None or rate <= 0:
            return None
        return max(0, self.total.bytes - self.bytes) / rate

    def text(self) -> str:
        """The status line: ``label: [step, ]bytes[ of total (percent)] at rate[, ETA]``."""
        step = f"volume {self.volume}/{self.volumes}, " if self.volume else ""
        basis = self.total.basis if self.total is not None else None
        # The estimate's basis last: on a narrow terminal it is what gets cut.
        return f"{self.label}: {step}{summary(self.bytes, self.rate, self.total, self.eta)}" + (
            f" (estimate: {basis})" if basis else ""
        )

    def fields(self) -> dict[str, Any]:
        """The numbers for the log event."""
        found: dict[str, Any] = {"bytes": self.bytes, "rate": round(self.rate)}
        if self.total is not None:
            eta = self.eta
            found |= {"total": self.total.bytes, "percent": self.percent}
            found |= {"eta": None if eta is None else round(eta)}
            if self.total.basis is not None:
                found["estimate"] = self.total.basis
        if self.volume:
            found |= {"volume": self.volume, "volumes": self.volumes}
        return found

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self._line.show(self.text())

    def update(self, bytes_so_far: int) -> None:
        self.bytes = bytes_so_far
        now = time.monotonic()
        if self._line.enabled:
            if now - self._last_draw >= REDRAW_EVERY:
                self._draw(now)
        elif now - self._last_log >= self._log_every:
            self._last_log = now
            self._log.info(self._event, **self.fields())

    def advance(self, count: int) -> None:
        self.update(self.bytes + count)

    def next_volume(self) -> None:
        """The next volume begins: ``volume 3/8`` is shown at once."""
        self.volume += 1
        self._draw(time.monotonic())

    def done(self) -> None:
        """Erase the status line: whatever is written next starts on a clean line."""
        self._line.clear()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done()

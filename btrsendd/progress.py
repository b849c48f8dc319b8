"""Progress of long transfers on a terminal: bytes so far and rate, redrawn in place.

Only drawn when stderr is a TTY; elsewhere the periodic ``upload.progress`` log event carries
the same numbers, so the journal shows progress without carriage-return noise.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: binary units, as ``volume_size`` is written."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Feeds a terminal line and a periodic log event from one ``update(total_bytes)`` call."""

    def __init__(self, label: str, log: Any, *, log_every: float = 30.0) -> None:
        self.label = label
        self._log = log
        self._tty = sys.stderr.isatty()
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_log = self._start
        self._log_every = log_every
        self.bytes = 0

    @property
    def rate(self) -> float:
        """Bytes per second since the start."""
        return self.bytes / max(time.monotonic() - self._start, 1e-6)

    def update(self, total_bytes: int) -> None:
        self.bytes = total_bytes
        now = time.monotonic()
        if self._tty and now - self._last_draw >= 0.25:
            self._last_draw = now
            line = f"{self.label}: {human_bytes(total_bytes)} at {human_bytes(self.rate)}/s"
            sys.stderr.write(f"\r\033[K{line}")
            sys.stderr.flush()
        if now - self._last_log >= self._log_every:
            self._last_log = now
            self._log.info("upload.progress", bytes=total_bytes, rate=round(self.rate))

    def done(self) -> None:
        if self._tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

"""The line at the bottom of a terminal: one live status line that log lines never cut.

On a terminal, progress is one line redrawn in place (carriage return, erase to the end of the
line), and log lines go to the same stderr.  Written independently, a log line lands in the
middle of the progress line (``... 37.3 MiB/s2026-11-29T15:28:14 [info] ...``).  So one object
owns that line: every log line first erases it, is written whole, and the status line is
drawn again below it.  Progress comes from the pipeline's feeder thread while log lines come
from any thread, hence the lock.

Only a terminal gets a status line at all; elsewhere ``show`` does nothing and log lines pass
straight through.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

#: Back to the start of the line and erase it.
ERASE = "\r\033[K"


class StatusLine:
    """The status line of one stream (stderr), shared by progress displays and the log."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        try:
            self.enabled = stream.isatty()
        except (AttributeError, ValueError):  # a closed or fake stream
            self.enabled = False
        # Reentrant: a signal handler runs in the main thread between any two steps, and one
        # that writes must not wait for the lock its own thread holds.
        self._lock = threading.RLock()
        self._text: str | None = None

    def _width(self) -> int:
        """Columns to stay within: a line that wraps cannot be erased by ``ERASE``."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns if columns > 0 else 80

    def _draw(self) -> None:
        if self._text is not None:
            self.stream.write(ERASE + self._text[: self._width() - 1])
        self.stream.flush()

    def show(self, text: str) -> None:
        """Make ``text`` the status line (on a terminal; elsewhere nothing happens)."""
        if not self.enabled:
            return
        with self._lock:
            self._text = text
            self._draw()

    def clear(self) -> None:
        """Erase the status line; what is written next starts on a clean line."""
        with self._lock:
            if self._text is not None:
                self._text = None
                self.stream.write(ERASE)
                self.stream.flush()

    def write(self, lines: str) -> None:
        """Write whole ``lines`` (ending in a newline) above the status line."""
        with self._lock:
            if self._text is not None:
                self.stream.write(ERASE)
            self.stream.write(lines)
            self._draw()


_lines: dict[int, StatusLine] = {}
_lines_lock = threading.Lock()


def status_line(stream: TextIO | None = None) -> StatusLine:
    """The one status line of ``stream`` (default: the current ``sys.stderr``)."""
    stream = sys.stderr if stream is None else stream
    with _lines_lock:
        line = _lines.get(id(stream))
        if line is None or line.stream is not stream:
            line = _lines[id(stream)] = StatusLine(stream)
        return line


class LineLogger:
    """structlog's output end for stderr: each rendered event is written above the status
    line (``PrintLogger`` would write across it)."""

    def __init__(self, line: StatusLine) -> None:
        self._line = line

    def msg(self, message: str) -> None:
        self._line.write(message + "\n")

    debug = info = warning = warn = error = err = critical = exception = fatal = msg

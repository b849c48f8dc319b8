"""Progress and the terminal's status line, in-process on a real pseudo-terminal: what the line
says (total, percent, ETA, an estimate and its basis), that it stays within the terminal's
width (a wrapped line could not be erased), that log lines go above it, and that off a
terminal the numbers go to periodic log events instead.  ``tests/cli/test_progress.py`` runs
the real command line the same way."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
from collections.abc import Iterator
from typing import Any, TextIO

import pytest

from btrsendd import progress as progress_module
from btrsendd.progress import Progress, Total, summary
from btrsendd.terminal import ERASE, LineLogger, StatusLine
from btrsendd.units import clock
from tests.support.terminal import screen


@pytest.fixture
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A pty 60 columns wide: the writing end as a text stream, and the reading end."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    stream = os.fdopen(slave, "w")
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


@pytest.fixture
def null() -> Iterator[TextIO]:
    """A stream that is no terminal."""
    with open(os.devnull, "w") as stream:
        yield stream


def received(master: int) -> str:
    """All the terminal has been sent so far: a pty hands it over in pieces, so read until a
    moment passes with nothing more."""
    data = b""
    while select.select([master], [], [], 0.2)[0]:
        data += os.read(master, 65536)
    return data.decode().replace("\r\n", "\n")


class Events:
    """A logger keeping what it is told: the events off a terminal."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.logged.append((event, fields))


def test_the_line_says_how_far_of_what_total_and_how_long_to_go() -> None:
    mib = 2**20
    assert summary(0, 0.0, None, None) == "0 B"
    assert summary(3 * mib, mib, None, None) == "3.0 MiB at 1.0 MiB/s"
    exact = Total(8 * mib)
    assert summary(2 * mib, mib, exact, 6.0) == "2.0 MiB of 8.0 MiB (25%) at 1.0 MiB/s, ETA 0:00:06"
    guess = Total(8 * mib, "the last full backup, 2000-01-01")
    assert summary(2 * mib, mib, guess, 6.0) == (
        "2.0 MiB of ~8.0 MiB (~25%) at 1.0 MiB/s, ETA ~0:00:06"
    )
    # An estimate that was too low: no percent, no ETA to make up.
    assert guess.percent(9 * mib) is None
    assert (
        summary(9 * mib, mib, guess, None) == "9.0 MiB (past the ~8.0 MiB estimated) at 1.0 MiB/s"
    )
    assert exact.percent(9 * mib) == 100
    assert (clock(6), clock(372), clock(90061)) == ("0:00:06", "0:06:12", "25:01:01")


class Clock:
    """``time.monotonic`` as the test sets it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_resumed_transfer_counts_only_what_remains_for_its_eta(
    monkeypatch: pytest.MonkeyPatch, null: TextIO
) -> None:
    fake = Clock()
    monkeypatch.setattr(progress_module, "time", fake)
    progress = Progress(
        "data full 2000-01-01 (resumed)",
        Events(),
        total=Total(100, "x"),
        start=60,
        line=StatusLine(null),
    )
    assert (progress.bytes, progress.percent, progress.eta) == (60, 60, None)  # no rate yet
    fake.now += 10
    progress.update(80)
    # 20 bytes moved in 10 s (the 60 resumed ones were not moved now), 20 to go: 10 s more.
    assert (progress.rate, progress.eta) == (2.0, 10.0)
    assert progress.text() == (
        "data full 2000-01-01 (resumed): 80 B of ~100 B (~80%) at 2 B/s, ETA ~0:00:10 (estimate: x)"
    )


def test_log_lines_go_above_the_line_which_stays_within_the_width(
    terminal: tuple[TextIO, int],
) -> None:
    stream, master = terminal
    line = StatusLine(stream)
    assert line.enabled
    progress = Progress("data 2000-01-07", Events(), total=Total(10 * 2**20), volumes=3, line=line)
    progress.next_volume()
    LineLogger(line).msg("2000-01-07T00:00:00 [info] restore.received")
    progress.next_volume()
    progress.done()
    stream.flush()
    text = received(master)
    assert text.startswith(ERASE + "data 2000-01-07: 0 B of 10.0 MiB (0%)")
    assert ERASE + "2000-01-07T00:00:00 [info] restore.received\n" + ERASE + "data" in text
    drawn = [part for part in text.split(ERASE) if part.startswith("data")]
    assert drawn[-1] == "data 2000-01-07: volume 2/3, 0 B of 10.0 MiB (0%)"
    assert all(len(part) <= 59 for part in drawn)
    # What is left on the screen: the log line, and a clean line below it.
    assert screen(text) == ["2000-01-07T00:00:00 [info] restore.received", ""]

    # A line wider than the terminal is cut to fit, estimate's basis first.
    line.show("x" * 200)
    line.clear()
    stream.flush()
    assert received(master) == ERASE + "x" * 59 + ERASE


def test_off_a_terminal_the_numbers_go_to_periodic_log_events(null: TextIO) -> None:
    events = Events()
    line = StatusLine(null)
    assert not line.enabled
    progress = Progress(
        "data 2000-01-07",
        events,
        event="restore.progress",
        total=Total(1000),
        volumes=2,
        log_every=0,
        line=line,
    )
    progress.next_volume()
    progress.update(250)
    [(name, fields)] = events.logged
    assert name == "restore.progress"
    assert fields["bytes"] == 250 and fields["total"] == 1000 and fields["percent"] == 25
    assert (fields["volume"], fields["volumes"]) == (1, 2)
    assert fields["eta"] is not None and "estimate" not in fields

"""``<state_dir>/daemon.json``: what the daemon publishes, and how others find it running.

The daemon rewrites the file whenever what it does changes (``publisher.py``): its pid and
state, the status line it also gives systemd, the next scheduled run, the cycle running now
with the upload's progress, and per source what it last saw.  ``status`` shows it, ``trigger``
finds the daemon to signal through it, and a restarted daemon reads back two things it keeps:
each source's record and when the last scheduled cycle started (for catch-up).

Every reader goes through ``read_state``, which returns the same typed records the daemon
writes.  The file is a convenience, never a reason to fail: it may be missing, from an older
version (fields added since are absent), or damaged, so a field that is missing or of the
wrong type reads as its default (a wrong record or cycle as none), and a file that is not a
JSON object reads as no state at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from tzlocal import get_localzone

from btrsendd.progress import Total

STATE_FILE = "daemon.json"


def now() -> datetime:
    """The local time, as the daemon records and schedules it."""
    return datetime.now(get_localzone())


def format_time(when: datetime) -> str:
    """``2026-11-27 00:00`` (seconds only when they matter), local time."""
    local = when.astimezone(get_localzone())
    return local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")


# -- reading fields leniently ----------------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    # bool is an int to Python, never to the writer.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    if isinstance(value, float):
        return value
    count = _count(value)
    return None if count is None else float(count)


def _object(value: object) -> Mapping[str, object] | None:
    return value if isinstance(value, dict) else None


# -- the records -----------------------------------------------------------------------------


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

    @classmethod
    def read(cls, doc: Mapping[str, object]) -> SourceRecord:
        return cls(
            last_run_at=_text(doc.get("last_run_at")),
            last_result=_text(doc.get("last_result")),
            last_success_at=_text(doc.get("last_success_at")),
            last_error=_text(doc.get("last_error")),
            last_error_at=_text(doc.get("last_error_at")),
            failures=_count(doc.get("failures")) or 0,
            uploaded_bytes=_count(doc.get("uploaded_bytes")) or 0,
        )


@dataclass
class CycleRecord:
    """The cycle running now, with the upload's progress once one is under way."""

    #: ``schedule`` or ``signal`` (a forced cycle).
    trigger: str
    date: str
    started_at: str
    source: str | None = None
    bytes: int = 0
    rate: float = 0.0
    #: The upload's total, an estimate (``progress.Total``) with where it comes from.
    total: int | None = None
    estimate: str | None = None
    #: Seconds to go at the rate so far, if known.
    eta: float | None = None

    def progress(self) -> Total | None:
        """The upload's total as ``progress`` words it."""
        return None if self.total is None else Total(self.total, self.estimate)

    @classmethod
    def read(cls, doc: Mapping[str, object]) -> CycleRecord | None:
        trigger = _text(doc.get("trigger"))
        day = _text(doc.get("date"))
        started_at = _text(doc.get("started_at"))
        if trigger is None or day is None or started_at is None:
            return None
        return cls(
            trigger=trigger,
            date=day,
            started_at=started_at,
            source=_text(doc.get("source")),
            bytes=_count(doc.get("bytes")) or 0,
            rate=_number(doc.get("rate")) or 0.0,
            total=_count(doc.get("total")),
            estimate=_text(doc.get("estimate")),
            eta=_number(doc.get("eta")),
        )


@dataclass
class PublishedState:
    """The whole of ``daemon.json``.

    ``pid``, ``version``, ``config`` and ``started_at`` are always written; they read as
    None only from a file that lacks them.
    """

    pid: int | None
    version: str | None
    config: str | None
    started_at: str | None
    #: ``starting``, ``idle``, ``running``, ``stopping`` or ``stopped``.
    state: str = "starting"
    #: One line for people, also systemd's STATUS=.
    status: str = "starting"
    next_run: str | None = None
    #: When the last completed cycle started: what catch-up compares the schedule with.
    last_scheduled: str | None = None
    cycle: CycleRecord | None = None
    sources: dict[str, SourceRecord] = field(default_factory=dict)
    #: When the file was written.
    updated_at: str | None = None

    @classmethod
    def read(cls, doc: Mapping[str, object]) -> PublishedState:
        cycle = _object(doc.get("cycle"))
        sources = _object(doc.get("sources")) or {}
        return cls(
            pid=_count(doc.get("pid")),
            version=_text(doc.get("version")),
            config=_text(doc.get("config")),
            started_at=_text(doc.get("started_at")),
            state=_text(doc.get("state")) or "starting",
            status=_text(doc.get("status")) or "starting",
            next_run=_text(doc.get("next_run")),
            last_scheduled=_text(doc.get("last_scheduled")),
            cycle=None if cycle is None else CycleRecord.read(cycle),
            sources={
                name: SourceRecord.read(record)
                for name, value in sources.items()
                if (record := _object(value)) is not None
            },
            updated_at=_text(doc.get("updated_at")),
        )


def read_state(state_dir: Path) -> PublishedState | None:
    """The last state a daemon published in ``state_dir``, or None (none, or unreadable)."""
    try:
        doc = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return PublishedState.read(doc) if isinstance(doc, dict) else None


def write_state(state_dir: Path, state: PublishedState) -> None:
    """Stamp ``state`` and replace the file atomically, so a reader never sees half of it."""
    state.updated_at = now().isoformat()
    path = state_dir / STATE_FILE
    temp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as out:
        out.write(json.dumps(asdict(state), indent=2))
    os.replace(temp, path)


# -- finding the daemon ----------------------------------------------------------------------


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


def live_pid(state: PublishedState | None) -> int | None:
    """The pid of the daemon that published ``state``, if it is still running."""
    if state is None or state.state == "stopped" or state.pid is None:
        return None
    return state.pid if is_daemon_process(state.pid) else None


def running_daemon(state_dir: Path) -> tuple[int, PublishedState] | None:
    """The pid and published state of the daemon running on ``state_dir``, if one is."""
    state = read_state(state_dir)
    pid = live_pid(state)
    return None if pid is None or state is None else (pid, state)

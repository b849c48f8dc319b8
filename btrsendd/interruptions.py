"""The last interruption of each source's backup cycle, for ``status`` and the metrics:
``<state_dir>/interrupted.json``.

A cycle stopped halfway (the daemon stopped by systemd, Ctrl-C or SIGTERM to ``btrsendd
backup``, an upload that failed part-way) leaves its work to the next cycle, which resumes or
discards it.  The catalog keeps the partial backup's row (``uploading``), but not when or why
it stopped, nor anything of a partial backup that was discarded at once.  Whoever is
interrupted records that here, while still holding the state directory's lock (so two
writers never race): the upload when it stops (``upload.py``), ``btrsendd backup`` when a
signal stops it elsewhere.  ``status`` shows the record, the daemon's metrics count them.

The signal handlers of ``interrupt.py`` are a different matter: they make the interruption;
this module remembers it.  Like ``daemon.json``, the file is a convenience: read leniently
(missing or damaged, it reads as nothing recorded), and a failure to write it is logged, never
raised: a stop must not turn into a failure of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

from btrsendd.errors import BtrsenddError
from btrsendd.interrupt import Cancelled, Interrupted
from btrsendd.log import get_logger
from btrsendd.model import Backup

FILE = "interrupted.json"


@dataclass(frozen=True)
class Interruption:
    """One interrupted cycle of one source."""

    #: When, as local ISO time.
    at: str
    #: The signal that stopped it (``SIGTERM``); None when an error did.
    signal: str | None
    #: Why, in words: who was stopped by what, or the error.
    reason: str
    #: The backup being uploaded, if one was.
    backup_id: str | None = None
    date: str | None = None
    volumes_stored: int = 0
    #: What became of that backup: ``resume`` (the next cycle resumes it) or ``discarded``.
    outcome: str | None = None

    @classmethod
    def of(
        cls,
        exc: BaseException,
        backup_id: str | None = None,
        date: str | None = None,
        volumes_stored: int = 0,
        outcome: str | None = None,
    ) -> Interruption:
        """The interruption ``exc`` makes now, to the backup ``backup_id`` if one was in flight."""
        signame, reason = _cause(exc)
        at = datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(at, signame, reason, backup_id, date, volumes_stored, outcome)

    @classmethod
    def read(cls, doc: Mapping[str, object]) -> Interruption | None:
        types: dict[str, type] = {"volumes_stored": int}
        values = {f.name: doc.get(f.name) for f in fields(cls)}
        for name, value in values.items():
            if value is not None and type(value) is not types.get(name, str):
                return None
        if values["at"] is None or values["reason"] is None:
            return None
        try:
            datetime.fromisoformat(str(values["at"]))
        except ValueError:
            return None
        values["volumes_stored"] = values["volumes_stored"] or 0
        return cls(**values)  # type: ignore[arg-type]


def _cause(exc: BaseException) -> tuple[str | None, str]:
    """The signal (None for an error) and the reason of an interruption, in words."""
    if isinstance(exc, Cancelled):
        return exc.signame, f"the daemon was stopped by {exc.signame}"
    if isinstance(exc, Interrupted):
        return exc.signame, f"stopped by {exc.signame}" + (
            " (Ctrl-C)" if exc.signame == "SIGINT" else ""
        )
    if isinstance(exc, BtrsenddError):
        return None, str(exc)
    return None, f"internal error: {exc!r}"


@dataclass
class SourceInterruptions:
    """What is recorded for one source: how many, by signal and by error, and the last."""

    by_signal: int = 0
    by_error: int = 0
    last: Interruption | None = None

    @classmethod
    def read(cls, doc: Mapping[str, object]) -> SourceInterruptions:
        counts = [doc.get("by_signal"), doc.get("by_error")]
        by_signal, by_error = (c if type(c) is int and c >= 0 else 0 for c in counts)
        last = doc.get("last")
        return cls(by_signal, by_error, Interruption.read(last) if isinstance(last, dict) else None)


def read_interruptions(state_dir: Path) -> dict[str, SourceInterruptions]:
    """Every source's record (none for a source never interrupted)."""
    try:
        doc = json.loads((state_dir / FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        name: SourceInterruptions.read(value)
        for name, value in doc.items()
        if isinstance(value, dict)
    }


def record_interruption(state_dir: Path, source: str, what: Interruption) -> None:
    """Make ``what`` the last interruption of ``source`` and count it; the caller holds the
    state directory's lock."""
    records = read_interruptions(state_dir)
    mine = records.setdefault(source, SourceInterruptions())
    if what.signal is None:
        mine.by_error += 1
    else:
        mine.by_signal += 1
    mine.last = what
    text = json.dumps({name: asdict(r) for name, r in records.items()}, indent=2)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{FILE}.", dir=state_dir)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(temp, state_dir / FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as exc:
        get_logger(source=source).warning(
            "interruption.unrecorded", path=str(state_dir / FILE), reason=str(exc)
        )


def unfinished_upload(
    state_dir: Path, row: Backup, exc: BaseException, stored: int, *, discarded: bool
) -> None:
    """Say what became of ``row``'s upload, which ``exc`` ended with ``stored`` volumes
    stored, and record it.

    A stop someone asked for (systemctl stop, Ctrl-C) is routine and the next cycle resumes
    it: ``upload.interrupted``, a warning.  Anything else is ``upload.failed``, an error.  The
    front end (CLI or daemon) reports the cycle's ``backup.failed`` itself.
    """
    outcome = "discarded" if discarded else "resume"
    what = Interruption.of(exc, row.id, row.date.isoformat(), stored, outcome)
    record_interruption(state_dir, row.source, what)
    log = get_logger(source=row.source, backup_id=row.id)
    facts = {
        "volumes_stored": stored,
        "next_step": "discarded" if discarded else "resume at the next cycle",
    }
    if isinstance(exc, Cancelled | Interrupted):
        log.warning("upload.interrupted", reason=what.reason, **facts)
    else:
        error = str(exc) if isinstance(exc, BtrsenddError) else repr(exc)
        log.error("upload.failed", error=error, **facts)
    if isinstance(exc, Interrupted):
        exc.recorded = True
        # For the one line the command prints.
        what_left = f"backup {row.id} of {row.source} ({row.date})"
        exc.tell(
            f"{what_left}: nothing was stored; it was discarded"
            if discarded
            else f"{what_left}: {stored} volume(s) stored; the next backup resumes it from there"
        )

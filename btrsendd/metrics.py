"""Prometheus metrics in node_exporter's textfile format, for alerting on stale backups.

The daemon rewrites the file after every cycle (atomically: the collector may read at any
moment) from what it already keeps: its per-source records and the catalog.  Off unless
``[metrics] textfile`` is set.  The alert that matters is on
``time() - btrsendd_last_success_timestamp_seconds``: a backup that silently stopped.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from btrsendd.interruptions import SourceInterruptions
from btrsendd.model import Backup


@dataclass(frozen=True)
class SourceFacts:
    """What the daemon knows of one source beyond the catalog."""

    last_run_at: str | None
    last_success_at: str | None
    failures: int
    uploaded_bytes: int
    #: Its interrupted cycles, the daemon's and ``btrsendd backup``'s (``interruptions.py``).
    interruptions: SourceInterruptions | None = None


_HELP = {
    "btrsendd_last_success_timestamp_seconds": (
        "gauge",
        "When the last cycle for the source succeeded (backed up or nothing due).",
    ),
    "btrsendd_last_run_timestamp_seconds": ("gauge", "When the last cycle for the source ran."),
    "btrsendd_failures_total": ("counter", "Cycles for the source that failed."),
    "btrsendd_interrupted_total": (
        "counter",
        "Cycles for the source interrupted before their backup was stored: by a signal "
        "(systemctl stop, Ctrl-C) or by an error during the upload.",
    ),
    "btrsendd_last_interrupted_timestamp_seconds": (
        "gauge",
        "When a cycle for the source was last interrupted.",
    ),
    "btrsendd_uploaded_bytes_total": ("counter", "Raw send-stream bytes uploaded."),
    "btrsendd_last_backup_bytes": ("gauge", "Raw bytes of the newest complete backup."),
    "btrsendd_last_backup_duration_seconds": (
        "gauge",
        "Wall time of the newest complete backup, from start to manifest.",
    ),
    "btrsendd_stored_bytes": ("gauge", "Bytes stored, by storage class."),
}


def _timestamp(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Exact integers (byte counts exceed a float's %g precision), floats as Python writes them."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(facts: Mapping[str, SourceFacts], backups: Iterable[Backup]) -> str:
    """The textfile's contents for ``facts`` (per source) and the catalog's complete backups."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in _HELP}
    newest: dict[str, Backup] = {}
    stored: dict[tuple[str, str], int] = {}
    for row in backups:
        newest[row.source] = row  # oldest first: the last one seen is the newest
        key = (row.source, row.storage_class)
        stored[key] = stored.get(key, 0) + row.stored_bytes
    for source, fact in sorted(facts.items()):
        labels = {"source": source}
        for name, iso in (
            ("btrsendd_last_success_timestamp_seconds", fact.last_success_at),
            ("btrsendd_last_run_timestamp_seconds", fact.last_run_at),
        ):
            when = _timestamp(iso)
            if when is not None:
                samples[name].append((labels, when))
        samples["btrsendd_failures_total"].append((labels, fact.failures))
        stops = fact.interruptions or SourceInterruptions()
        for cause, count in (("signal", stops.by_signal), ("error", stops.by_error)):
            samples["btrsendd_interrupted_total"].append(({**labels, "cause": cause}, count))
        when = _timestamp(None if stops.last is None else stops.last.at)
        if when is not None:
            samples["btrsendd_last_interrupted_timestamp_seconds"].append((labels, when))
        samples["btrsendd_uploaded_bytes_total"].append((labels, fact.uploaded_bytes))
    for source, row in sorted(newest.items()):
        labels = {"source": source}
        samples["btrsendd_last_backup_bytes"].append((labels, row.raw_bytes))
        finished = _timestamp(row.completed_at)
        started = _timestamp(row.created_at)
        if finished is not None and started is not None:
            samples["btrsendd_last_backup_duration_seconds"].append((labels, finished - started))
    for (source, storage_class), size in sorted(stored.items()):
        samples["btrsendd_stored_bytes"].append(
            ({"source": source, "storage_class": storage_class}, size)
        )
    lines: list[str] = []
    for name, (kind, text) in _HELP.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in samples[name]:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically, so the collector never reads half a file.

    The temporary file gets a random name and is created exclusively: the collector's
    directory is often writable by its own user too, and a name that could be guessed (a
    pid) would let that user plant a symlink for root to write through.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o644)
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise

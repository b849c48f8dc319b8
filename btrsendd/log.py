"""Logging: structlog events with stable names and fields.

Events are named ``noun.verb`` (``snapshot.created``, ``backup.completed``, ...) and carry
their facts as fields (``source``, ``backup_id``, ``bytes``, ``rate``, ``duration``), so that
scripts and journald queries can rely on them.  Where the output goes:

- a terminal: readable lines, written above the progress line (``terminal.py``);
- the journal (a systemd service, see ``journal.stderr_is_journal``): native journal entries,
  each field its own journal field: ``BTRSENDD_EVENT``, ``BTRSENDD_SOURCE``,
  ``BTRSENDD_BACKUP_ID``, ... with ``PRIORITY`` from the level and a readable ``MESSAGE``,
  so ``journalctl -u btrsendd BTRSENDD_EVENT=backup.completed`` works;
- anything else (a pipe, a file): one JSON object per line.

``--log-format console|json`` overrides the choice.  Logs never go to stdout: stdout belongs
to command output (``--json``, btrsend's ``backup-stdin`` protocol).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import structlog

from btrsendd.journal import JournalSocket, encode, stderr_is_journal
from btrsendd.terminal import LineLogger, status_line

Format = Literal["auto", "console", "json"]

# Field names that must never reach a log line, whatever a caller passes by mistake.
_SECRET_MARKERS = ("secret", "password", "token", "credential", "access_key")

#: syslog priorities (journald's PRIORITY) for structlog's level names.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

#: Fields the journal records on its own (time) or that PRIORITY already carries.
_NOT_JOURNAL_FIELDS = frozenset({"event", "level", "timestamp"})


def _drop_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in [k for k in event if any(m in k.lower() for m in _SECRET_MARKERS)]:
        event[key] = "[redacted]"
    return event


def _text(value: Any) -> str:
    """A field value as journal text: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def journal_fields(event: Mapping[str, Any]) -> dict[str, str]:
    """The journal entry for one event: its fields, PRIORITY and a readable MESSAGE."""
    name = str(event.get("event", ""))
    extra = {k: v for k, v in event.items() if k not in _NOT_JOURNAL_FIELDS and v is not None}
    fields = {
        "MESSAGE": " ".join([name, *(f"{k}={_text(v)}" for k, v in extra.items())]),
        "PRIORITY": str(_PRIORITY.get(str(event.get("level")), 6)),
        "SYSLOG_IDENTIFIER": "btrsendd",
        "BTRSENDD_EVENT": name,
    }
    for key, value in extra.items():
        # Journal field names are upper-case letters, digits and underscores.
        fields["BTRSENDD_" + re.sub(r"[^A-Z0-9_]", "_", key.upper())] = _text(value)
    return fields


def _render_journal(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> tuple[tuple[dict[str, str]], dict[str, Any]]:
    return (journal_fields(event),), {}


class JournalLogger:
    """structlog's output end for the journal: sends each rendered entry to journald.

    If journald cannot be reached (restarting, socket gone), the readable message goes to
    stderr instead, which systemd also forwards to the journal: the event loses its fields
    but is not lost.
    """

    def __init__(self, sock: JournalSocket) -> None:
        self._sock = sock

    def msg(self, fields: dict[str, str]) -> None:
        try:
            self._sock.send(encode(fields))
        except OSError:
            print(fields["MESSAGE"], file=sys.stderr, flush=True)

    debug = info = warning = warn = error = err = critical = exception = fatal = msg


class _ToStructlog(logging.Handler):
    """Stdlib log records (APScheduler's, botocore's) as events, in the same output."""

    def emit(self, record: logging.LogRecord) -> None:
        get_logger(logger=record.name).log(
            record.levelno, "library.log", detail=record.getMessage()
        )


def configure(fmt: Format = "auto", level: str = "info") -> None:
    """Set up structlog once per process; safe to call again (the daemon does on reload)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    use_journal = fmt == "auto" and not use_console and stderr_is_journal()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        _drop_secrets,
    ]
    # Written above the status line a progress display may be drawing (``terminal.py``).
    output: LineLogger | JournalLogger = LineLogger(status_line(sys.stderr))
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    elif use_journal:
        processors += [structlog.processors.format_exc_info, _render_journal]
        output = JournalLogger(JournalSocket())
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]

    def factory(*_args: Any) -> LineLogger | JournalLogger:
        return output

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not any(isinstance(h, _ToStructlog) for h in root.handlers):
        root.addHandler(_ToStructlog())


def get_logger(**context: Any) -> Any:
    """A logger bound to ``context`` (e.g. ``source="home"``)."""
    return structlog.get_logger().bind(**context)

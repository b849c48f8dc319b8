"""Logging: structlog events with stable names and fields.

Events are named ``noun.verb`` (``snapshot.created``, ``backup.completed``, ...) and carry
their facts as fields (``source``, ``backup_id``, ``bytes``, ``rate``, ``duration``), so that
scripts and journald queries can rely on them.  A person at a terminal gets readable lines;
anything else (a pipe, a file, systemd) gets one JSON object per line.  Logs always go to
stderr: stdout belongs to command output (``--json``, the seed's ``backup-stdin`` protocol).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

Format = Literal["auto", "console", "json"]

# Field names that must never reach a log line, whatever a caller passes by mistake.
_SECRET_MARKERS = ("secret", "password", "token", "credential", "access_key")


def _drop_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in [k for k in event if any(m in k.lower() for m in _SECRET_MARKERS)]:
        event[key] = "[redacted]"
    return event


def configure(fmt: Format = "auto", level: str = "info") -> None:
    """Set up structlog once per process; safe to call again (the daemon does on reload)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            _drop_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A logger bound to ``context`` (e.g. ``source="home"``)."""
    return structlog.get_logger().bind(**context)

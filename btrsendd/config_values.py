"""The kinds of values a configuration file holds, each with how it is checked: sizes, rates,
absolute paths, crontab expressions and hook commands.

Kept apart from the sections that use them (``config.py``), which would otherwise outgrow one
screenful per idea; each type says in its error what a good value looks like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from btrsendd import cron
from btrsendd.units import parse_rate, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
#: Bytes per second; None (unset, or "unlimited") for no limit.
Rate = Annotated[int | None, BeforeValidator(parse_rate)]


def _require_absolute(path: Path) -> Path:
    """Reject relative paths: the daemon runs from ``/``, the CLI from anywhere, so a relative
    path would name a different place depending on who reads the file."""
    if not path.is_absolute():
        raise ValueError(f"{str(path)!r} must be an absolute path")
    return path


AbsolutePath = Annotated[Path, AfterValidator(_require_absolute)]


def validate_cron(expr: str) -> str:
    """Accept a standard five-field crontab expression (minute hour day month weekday).

    Parsed here, field by field, so a typo is reported with the field it is in by every
    command; whether it ever fires is for the trigger to say (``cron.cron_trigger``), which
    the daemon, ``status`` and ``check-config`` build.
    """
    cron.parse(expr)
    return expr


def _no_shell(value: object) -> object:
    """Refuse a hook written as one string: there is no shell to split it."""
    if isinstance(value, str):
        raise ValueError(
            f"{value!r} is a string; write the command as a list of its arguments, e.g. "
            '["/usr/local/sbin/db-freeze", "--all"]: hooks run without a shell'
        )
    return value


def _runnable(argv: tuple[str, ...]) -> tuple[str, ...]:
    if argv and (not argv[0] or ("/" in argv[0] and not argv[0].startswith("/"))):
        raise ValueError(
            f"{argv[0]!r} is no program: give its absolute path, or a name alone to look up "
            "in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin and /bin"
        )
    if any("\0" in arg for arg in argv):
        raise ValueError("an argument holds a NUL character")
    return argv


#: A program and its arguments; empty for no hook.
HookCommand = Annotated[tuple[str, ...], BeforeValidator(_no_shell), AfterValidator(_runnable)]

"""What ``check-config`` reports: findings, each naming the TOML key to change and how.

Its own module so that the checks can live in the modules that know their subject
(``preflight``, ``gpg``, ``layout``) without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from btrsendd import permissions

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem: ``error`` blocks running, ``warning`` is worth a look."""

    level: Level
    key: str
    message: str


def error(key: str, message: str) -> Finding:
    return Finding("error", key, message)


def warning(key: str, message: str) -> Finding:
    return Finding("warning", key, message)


def private_dir(key: str, path: Path, role: permissions.Role) -> list[Finding]:
    """A directory others could read or swap: an error, or a warning when chmod is enough
    (the commands tighten it themselves)."""
    return [
        Finding("error" if p.new_mode is None else "warning", key, p.message)
        for p in permissions.inspect(path, role)
    ]

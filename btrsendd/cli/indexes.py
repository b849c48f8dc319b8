"""What ``find`` and ``diff`` share: the source's backups and their file indexes, and how an
entry reads (a path may hold any byte but '/' and NUL, so it is shown escaped)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from btrsendd.fileindex.entries import Entry
    from btrsendd.fileindex.history import Loader
    from btrsendd.model import Backup
    from btrsendd.repository import Repository


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", metavar="NAME", required=True, help="the source to look into")
    parser.add_argument(
        "--gnupg-home",
        type=Path,
        metavar="DIR",
        help="keyring holding the private key that decrypts the indexes (default: gpg's own)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def loader(repo: Repository, backups: list[Backup], gnupg_home: Path | None) -> Loader:
    """Reads each backup's stored index, once the keyring is known to decrypt them."""
    from btrsendd.fileindex import stored
    from btrsendd.pipeline.gpg import check_private_keys

    check_private_keys([b for b in backups if b.file_index is not None], gnupg_home)
    return lambda backup: stored.load_index(repo, backup, gnupg_home)


def shown(path: str) -> str:
    """``path`` for a terminal: control characters and undecodable bytes escaped; the root
    is '/'."""
    if not path:
        return "/"
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def when(ns: int, form: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A file time as people read it (UTC, to the second)."""
    seconds = ns // 1_000_000_000
    try:
        at = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"@{seconds}"
    return at.strftime(form)


def backup_json(backup: Backup) -> dict[str, str]:
    return {"date": backup.date.isoformat(), "id": backup.id}


def entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "path": entry.path,
        "kind": entry.kind,
        "size": entry.size,
        "mode": f"{entry.mode & 0o7777:04o}",
        "uid": entry.uid,
        "gid": entry.gid,
        "mtime": when(entry.mtime_ns, "%Y-%m-%dT%H:%M:%SZ"),
        "mtime_ns": entry.mtime_ns,
        "target": entry.target,
    }

"""``btrsendd find``: on which backed-up days a path matching a pattern existed, and as what.

Read from the file indexes alone (downloaded and decrypted; nothing is thawed).  Days a path
kept the same size and mtime are one line, from its first day to its last; a day it cannot
see into (no index) ends a line, since the path may have changed or gone then.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, load_config, print_table
from btrsendd.cli.indexes import add_options, backup_json, entry_json, loader, shown, when
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.fileindex.entries import Entry
    from btrsendd.fileindex.history import Day
    from btrsendd.model import Backup


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "find",
        run,
        "list every backed-up day on which a path matching PATTERN existed, with its size "
        "and mtime, from the file indexes (nothing is thawed)",
    )
    p.add_argument(
        "pattern",
        metavar="PATTERN",
        help="shell wildcards (* ? [..]); without '/' matched against each base name (as "
        "find -name), with '/' against the whole path from the subvolume's root, e.g. "
        "'docs/*.odt' (a leading '/' is allowed; '*' also matches '/')",
    )
    add_options(p)


@dataclass
class Version:
    """A path over consecutive backups in which it kept its kind, size and mtime."""

    entry: Entry
    backups: list[Backup] = field(default_factory=list)


def _versions(days: list[tuple[Day, dict[str, Entry]]]) -> list[Version]:
    open_: dict[str, Version] = {}
    done: list[Version] = []
    for day, found in days:
        for path in list(open_):
            entry = found.get(path)
            version = open_[path]
            if entry is None or _key(entry) != _key(version.entry):
                done.append(open_.pop(path))
        for path, entry in found.items():
            if path not in open_:
                open_[path] = Version(entry)
            open_[path].backups.append(day.backup)
    done.extend(open_.values())
    done.sort(key=lambda v: (v.entry.path, v.backups[0].date))
    return done


def _key(entry: Entry) -> tuple[str, int, int]:
    return entry.kind, entry.size, entry.mtime_ns


def run(args: argparse.Namespace) -> int:
    from btrsendd.fileindex.history import Matches, matcher, replay
    from btrsendd.repository import open_repository

    match = matcher(args.pattern)
    config = load_config(args)
    config.source(args.source)
    days: list[tuple[Day, dict[str, Entry]]] = []
    unseen: list[Day] = []
    with open_repository(config) as repo:
        backups = repo.catalog.backups(args.source)
        matches = Matches(match)
        for day in replay(backups, loader(repo, backups, args.gnupg_home)):
            if day.tree is None:
                unseen.append(day)
                days.append((day, {}))  # ends every line: unknown is not the same
                continue
            matches.update(day)
            days.append((day, dict(matches.entries)))
    versions = _versions(days)
    if args.json:
        print(json.dumps(_json(args, versions, unseen), indent=2))
        return 0
    if not backups:
        print(f"{args.source} has no complete backup yet")
        return 0
    if versions:
        print_table(
            ("PATH", "FROM", "TO", "BACKUPS", "SIZE", "MODIFIED (UTC)"),
            [
                (
                    shown(v.entry.path) + ("/" if v.entry.kind == "dir" else ""),
                    str(v.backups[0].date),
                    str(v.backups[-1].date),
                    str(len(v.backups)),
                    human_bytes(v.entry.size) if v.entry.kind == "file" else v.entry.kind,
                    when(v.entry.mtime_ns),
                )
                for v in versions
            ],
        )
    else:
        seen = len(backups) - len(unseen)
        print(f"no path matching {args.pattern!r} in any of the {seen} backup(s) seen")
    for run in _runs(days):
        first, last = run[0].backup.date, run[-1].backup.date
        span = f"{first}" if len(run) == 1 else f"{first} .. {last} ({len(run)} backups)"
        print(f"cannot see into {span}: {run[0].unseen}")
    return 0


def _runs(days: list[tuple[Day, dict[str, Entry]]]) -> list[list[Day]]:
    """The days it cannot see into, in runs of consecutive ones (a run's first says why)."""
    runs: list[list[Day]] = []
    previous_seen = True
    for day, _ in days:
        if day.tree is None:
            if previous_seen:
                runs.append([])
            runs[-1].append(day)
        previous_seen = day.tree is not None
    return runs


def _json(args: argparse.Namespace, versions: list[Version], unseen: list[Day]) -> Any:
    return {
        "source": args.source,
        "pattern": args.pattern,
        "matches": [
            {**entry_json(v.entry), "backups": [backup_json(b) for b in v.backups]}
            for v in versions
        ],
        "unseen": [{**backup_json(d.backup), "reason": d.unseen} for d in unseen],
    }

"""``btrsendd diff``: what was added, changed, renamed and deleted between two backed-up days,
from the file indexes alone (nothing is thawed)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, load_config, parse_date
from btrsendd.cli.indexes import add_options, backup_json, entry_json, loader, shown
from btrsendd.errors import UsageError

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.fileindex.diff import Changes
    from btrsendd.fileindex.entries import Entry
    from btrsendd.model import Backup


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "diff",
        run,
        "list what was added (A), deleted (D), changed (M: contents or metadata) and renamed "
        "(R) between the backups of two days, from the file indexes (nothing is thawed); "
        "a renamed directory is one line, a directory's own times are not listed",
    )
    p.add_argument(
        "--from",
        dest="first",
        type=parse_date,
        metavar="YYYY-MM-DD",
        required=True,
        help="the earlier day: its newest backup on or before it",
    )
    p.add_argument(
        "--to",
        dest="second",
        type=parse_date,
        metavar="YYYY-MM-DD",
        required=True,
        help="the later day: its newest backup on or before it",
    )
    add_options(p)


def run(args: argparse.Namespace) -> int:
    from btrsendd.fileindex.history import between
    from btrsendd.repository import open_repository
    from btrsendd.restore import resolve_chain

    if args.first > args.second:
        raise UsageError(f"--from {args.first} is after --to {args.second}; swap them")
    config = load_config(args)
    config.source(args.source)
    with open_repository(config) as repo:
        first = resolve_chain(repo.catalog, args.source, args.first)[-1]
        second = resolve_chain(repo.catalog, args.source, args.second)[-1]
        backups = repo.catalog.backups(args.source)
        found = between(backups, first, second, loader(repo, backups, args.gnupg_home))
    if args.json:
        print(json.dumps(_json(args.source, first, second, found), indent=2))
        return 0
    print(f"{args.source} from {first.date} ({first.id}) to {second.date} ({second.id}):")
    if first.chain != second.chain:
        print("  (another chain: files compared by kind, size, mtime, mode, owner and xattrs)")
    for mark, text in _lines(found):
        print(f"{mark} {text}")
    print(
        f"{len(found.added)} added, {len(found.deleted)} deleted, {len(found.changed)} "
        f"changed, {len(found.renamed)} renamed"
    )
    return 0


def _name(entry: Entry) -> str:
    return shown(entry.path) + ("/" if entry.kind == "dir" and entry.path else "")


def _lines(found: Changes) -> list[tuple[str, str]]:
    """One line per change, by path (the new one for renames)."""
    lines = [(e.path, "A", _name(e)) for e in found.added]
    lines += [(e.path, "D", _name(e)) for e in found.deleted]
    lines += [(b.path, "M", _name(b)) for _, b in found.changed]
    lines += [(b.path, "R", f"{_name(a)} -> {_name(b)}") for a, b in found.renamed]
    lines.sort()
    return [(mark, text) for _, mark, text in lines]


def _json(source: str, first: Backup, second: Backup, found: Changes) -> Any:
    return {
        "source": source,
        "from": backup_json(first),
        "to": backup_json(second),
        "added": [entry_json(e) for e in found.added],
        "deleted": [entry_json(e) for e in found.deleted],
        "changed": [{"before": entry_json(a), "after": entry_json(b)} for a, b in found.changed],
        "renamed": [{"from": a.path, "to": b.path, "kind": b.kind} for a, b in found.renamed],
    }

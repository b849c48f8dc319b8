"""``btrsendd plan``: what a backup run would do on a day, per source; changes nothing."""

from __future__ import annotations

import argparse
import json
from datetime import date
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, load_config, parse_date
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.backup import Outcome
    from btrsendd.cli.common import Commands


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "plan",
        run,
        "show what a backup run would do today (or on --date); changes nothing",
    )
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument("--date", type=parse_date, metavar="YYYY-MM-DD", help="decide for this date")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per source")


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "source": outcome.source,
        "date": outcome.date.isoformat(),
        "action": outcome.action,
        "parent": None if outcome.parent_date is None else outcome.parent_date.isoformat(),
        "expire": [d.isoformat() for d in outcome.expired],
    }


def describe(o: Outcome) -> str:
    """One line per source: what was (or would be) done, and why; ``backup`` prints it too."""
    what = {"none": "no backup due", "full": "full backup"}.get(o.action, "incremental")
    if o.action == "incremental" and o.parent_date:
        what += f" from {o.parent_date}"
    line = f"{o.source} {o.date}: {what} ({o.reason})"
    if o.backup_id:
        line += (
            f"; {o.backup_id}: {human_bytes(o.raw_bytes)} sent, "
            f"{human_bytes(o.stored_bytes)} stored in {o.volumes} volume(s)"
        )
    if o.expired:
        line += f"; expired chain of {len(o.expired)} backup(s) ({o.expired[0]} .. {o.expired[-1]})"
    return line


def run(args: argparse.Namespace) -> int:
    from btrsendd.backup import planned
    from btrsendd.repository import open_repository

    config = load_config(args)
    day = args.date or date.today()
    with open_repository(config) as repo:
        outcomes = [planned(repo, src.name, day) for src in config.selected_sources(args.source)]
    if args.json:
        print(json.dumps([outcome_json(o) for o in outcomes], indent=2))
    else:
        for o in outcomes:
            print(describe(o))
    return 0

"""``btrsendd backup-stdin``: btrsend's protocol, storing a send stream read from stdin."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from btrsendd.cli.common import add_command, load_config, parse_date

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.planner import Plan


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "backup-stdin",
        run,
        "btrsend's protocol: print nothing, 'c' or 'i YYYY-MM-DD', then store the send "
        "stream read from stdin",
    )
    p.add_argument("--source", metavar="NAME", required=True, help="the source to back up")
    p.add_argument(
        "--date",
        type=parse_date,
        metavar="YYYY-MM-DD",
        required=True,
        help="its date (at most tomorrow)",
    )


def run(args: argparse.Namespace) -> int:
    from btrsendd.backup import BackupCycle
    from btrsendd.repository import open_repository

    config = load_config(args)
    src = config.source(args.source)

    def announce(decision: Plan) -> None:
        # btrsend's protocol: say which stream is expected, then read it from stdin.
        print("c" if decision.parent is None else f"i {decision.parent.date}", flush=True)

    with open_repository(config, lock="backup-stdin") as repo:
        BackupCycle(repo).run_stdin(src.name, args.date, announce, sys.stdin.buffer)
    return 0

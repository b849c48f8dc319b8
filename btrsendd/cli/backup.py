"""``btrsendd backup``: snapshot each source, then upload a backup where one is due."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import TYPE_CHECKING

from btrsendd.cli import plan
from btrsendd.cli.common import add_command, load_config, parse_date, parse_rate
from btrsendd.errors import BtrsenddError

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "backup",
        run,
        "snapshot each source, then upload a full or incremental backup when one is due",
    )
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument(
        "--date",
        type=parse_date,
        metavar="YYYY-MM-DD",
        help="the backup's date and the snapshot's name (default: today; at most tomorrow)",
    )
    p.add_argument(
        "--force", action="store_true", help="back up even if the schedule says no backup is due"
    )
    p.add_argument("--dry-run", action="store_true", help="only show the plan, like `plan`")
    p.add_argument(
        "--rate-limit",
        type=parse_rate,
        default=argparse.SUPPRESS,
        metavar="RATE",
        help='bytes per second sent to storage, e.g. "20MiB/s" or "40Mbit/s", or "unlimited" '
        "(default: pipeline.rate_limit)",
    )


def run(args: argparse.Namespace) -> int:
    from btrsendd.backup import BackupCycle
    from btrsendd.interrupt import Interrupted
    from btrsendd.interruptions import Interruption, record_interruption
    from btrsendd.log import get_logger
    from btrsendd.repository import open_repository

    config = load_config(args)
    if "rate_limit" in args:
        pipeline = config.pipeline.model_copy(update={"rate_limit": args.rate_limit})
        config = config.model_copy(update={"pipeline": pipeline})
    day = args.date or date.today()
    if args.dry_run:
        args.json = False
        return plan.run(args)
    status = 0
    with open_repository(config, lock="backup") as repo:
        cycle = BackupCycle(repo)
        for src in config.selected_sources(args.source):
            try:
                print(plan.describe(cycle.run(src, day, force=args.force)))
            except Interrupted as exc:
                if not exc.recorded:  # stopped outside the upload, which records its own
                    record_interruption(config.state_dir, src.name, Interruption.of(exc))
                raise
            except BtrsenddError as exc:
                # One source failing must not stop the others; the exit status still says so.
                get_logger(source=src.name).error("backup.failed", reason=str(exc))
                print(f"btrsendd: error: {src.name}: {exc}", file=sys.stderr)
                status = max(status, exc.exit_status)
    return status

"""``btrsendd forget``: delete a backup made by mistake and the later backups of its chain."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, confirm, load_config, parse_date
from btrsendd.cli.list_backups import backup_json
from btrsendd.errors import UsageError
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.forget import Forgetting


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "forget",
        run,
        "delete a backup made by mistake (a wrong --date, a clock that jumped ahead) and every "
        "later backup of its chain, from storage and the catalog; shows what goes and what "
        "early deletion costs first",
    )
    p.add_argument("--source", metavar="NAME", required=True, help="the backup's source")
    p.add_argument(
        "--date", type=parse_date, metavar="YYYY-MM-DD", required=True, help="the backup's date"
    )
    p.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    p.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run: print what would be deleted as one JSON object",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before deleting")


def forgetting_lines(f: Forgetting) -> list[str]:
    """What will be deleted, what that costs early, and what it leaves."""
    lines = [
        f"  {r.date}  {r.kind:<11}  {r.state:<9}  {human_bytes(r.stored_bytes):>10}  "
        f"{r.volume_count:>3} volume(s)  {r.storage_class}  {r.id}"
        for r in f.rows
    ]
    if f.minimum_days:
        minimums = ", ".join(f"{c} {days}" for c, days in f.minimum_days.items())
        lines.append(
            f"  deleting them now costs about ${f.early_cost:.2f} in early-deletion charges "
            f"(cold storage bills a minimum number of days from upload: {minimums})"
        )
    if f.local_snapshots:
        lines.append(
            f"  local snapshots are kept: {', '.join(map(str, f.local_snapshots))} (delete one "
            "with `btrfs subvolume delete PATH` if it is a mistake too)"
        )
    return lines


def forgetting_json(source: str, day: date, f: Forgetting) -> dict[str, Any]:
    """``forget --dry-run --json``: what would go, what that costs early, what is kept."""
    return {
        "source": source,
        "date": day.isoformat(),
        "backups": [backup_json(r) for r in f.rows],
        "early_deletion_usd": round(f.early_cost, 2),
        "minimum_days": f.minimum_days,
        "local_snapshots_kept": [str(p) for p in f.local_snapshots],
    }


def run(args: argparse.Namespace) -> int:
    from btrsendd.forget import assess, doomed
    from btrsendd.log import get_logger
    from btrsendd.repository import open_repository

    if args.json and not args.dry_run:
        raise UsageError(
            "forget --json only describes what --dry-run would delete: add --dry-run (forget "
            "itself shows the same and asks first)"
        )
    config = load_config(args)
    src = config.source(args.source)
    with open_repository(config, lock="forget") as repo:
        every = repo.catalog.backups(src.name, states=("complete", "uploading", "expiring"))
        rows = doomed(every, src.name, args.date)
        assessed = assess(rows, src, datetime.now(UTC))
        if args.json:
            print(json.dumps(forgetting_json(src.name, args.date, assessed), indent=2))
            return 0
        later = len(rows) - 1
        print(
            f"Forget {src.name} {args.date}"
            + (
                f" and the {later} later backup(s) of its chain (they depend on it)"
                if later
                else ""
            )
            + ":"
        )
        for line in forgetting_lines(assessed):
            print(line)
        if args.dry_run:
            print("dry run: nothing was deleted")
            return 0
        if not args.yes and not confirm("Delete them from storage and the catalog?"):
            print("nothing was deleted")
            return 1
        locked = repo.delete_backups(rows)
        left = repo.catalog.backups(src.name)
    get_logger(source=src.name).info(
        "backup.forgotten", backups=[r.id for r in rows], dates=[str(r.date) for r in rows]
    )
    after = (
        f"the newest backup is now {left[-1].date} ({left[-1].id})"
        if left
        else "no backup is left; the next one is a full backup"
    )
    print(f"forgot {len(rows)} backup(s) of {src.name}; {after}")
    if locked is not None:
        print(
            f"their objects are locked (Object Lock) until {locked:%Y-%m-%d %H:%M} UTC: the "
            "first backup cycle after that deletes them from storage"
        )
    return 0

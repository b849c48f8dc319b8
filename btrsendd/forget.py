"""``btrsendd forget``: remove a backup made by mistake, with every later backup of its chain.

A backup dated a year ahead (a typo in ``--date``, a clock that jumped) is the newest for a
year: every real backup is refused as "the clock moved backwards", and ``catalog rebuild``
would adopt it again from its manifest.  Nothing else removes a single backup: expiry takes
whole chains, and only old ones.  ``forget`` deletes it from storage and from the catalog,
and with it the later members of its chain, which cannot be restored without it.

What goes, and what deleting it early costs in cold storage, is printed before anything is
deleted; without ``--yes`` it asks, and refuses where there is no one to ask.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime

from btrsendd import snapshots
from btrsendd.cli import confirm
from btrsendd.config import SourceConfig, config_path, load_config
from btrsendd.errors import UsageError
from btrsendd.log import get_logger
from btrsendd.model import Backup
from btrsendd.pricing import MINIMUM_STORAGE_DAYS, early_deletion_cost
from btrsendd.progress import human_bytes
from btrsendd.repository import open_repository


def doomed(rows: Sequence[Backup], source: str, day: date) -> list[Backup]:
    """The backup of ``source`` dated ``day`` and the later members of its chain, by date.

    ``rows`` are the source's backups in every state: an interrupted upload can be the
    mistake too.
    """
    wanted = next((r for r in rows if r.date == day), None)
    if wanted is None:
        dates = ", ".join(str(r.date) for r in rows[-5:]) or "none"
        raise UsageError(
            f"{source} has no backup dated {day} (the newest: {dates}); `btrsendd list "
            f"--source {source}` shows them all"
        )
    return sorted(
        (r for r in rows if r.chain == wanted.chain and r.date >= wanted.date),
        key=lambda r: r.date,
    )


def _age_days(row: Backup, now: datetime) -> int:
    try:
        return (now - datetime.fromisoformat(row.created_at)).days
    except ValueError:
        return 0


def describe(rows: Sequence[Backup], src: SourceConfig, now: datetime) -> list[str]:
    """What ``forget`` will delete, what that costs early, and what it leaves."""
    lines = [
        f"  {r.date}  {r.kind:<11}  {r.state:<9}  {human_bytes(r.stored_bytes):>10}  "
        f"{r.volume_count:>3} volume(s)  {r.storage_class}  {r.id}"
        for r in rows
    ]
    cost = sum(
        early_deletion_cost(r.storage_class, r.stored_bytes, _age_days(r, now)) for r in rows
    )
    classes = sorted({r.storage_class for r in rows if r.storage_class in MINIMUM_STORAGE_DAYS})
    if classes:
        minimums = ", ".join(f"{c} {MINIMUM_STORAGE_DAYS[c]}" for c in classes)
        lines.append(
            f"  deleting them now costs about ${cost:.2f} in early-deletion charges (cold "
            f"storage bills a minimum number of days from upload: {minimums})"
        )
    names = {r.snapshot for r in rows if r.snapshot is not None}
    local = [s.path for s in snapshots.list_snapshots(src.snapshot_dir) if s.name in names]
    if local:
        lines.append(
            f"  local snapshots are kept: {', '.join(map(str, local))} (delete one with "
            "`btrfs subvolume delete PATH` if it is a mistake too)"
        )
    return lines


def cmd_forget(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    src = config.source(args.source)
    with open_repository(config, lock="forget") as repo:
        every = repo.catalog.backups(src.name, states=("complete", "uploading", "expiring"))
        rows = doomed(every, src.name, args.date)
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
        for line in describe(rows, src, datetime.now(UTC)):
            print(line)
        if args.dry_run:
            print("dry run: nothing was deleted")
            return 0
        if not args.yes and not confirm("Delete them from storage and the catalog?"):
            print("nothing was deleted")
            return 1
        repo.delete_backups(rows)
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
    return 0

"""Forgetting a backup made by mistake, with every later backup of its chain.

A backup dated a year ahead (a typo in ``--date``, a clock that jumped) is the newest for a
year: every real backup is refused as "the clock moved backwards", and ``catalog rebuild``
would adopt it again from its manifest.  Nothing else removes a single backup: expiry takes
whole chains, and only old ones.  ``forget`` deletes it from storage and from the catalog,
and with it the later members of its chain, which cannot be restored without it.

What goes, and what deleting it early costs in cold storage, is worked out here
(``assess``) and shown by the command (``cli/forget.py``) before anything is deleted; without
``--yes`` it asks, and refuses where there is no one to ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from btrsendd import snapshots
from btrsendd.config import SourceConfig
from btrsendd.errors import UsageError
from btrsendd.model import Backup
from btrsendd.pricing import MINIMUM_STORAGE_DAYS, early_deletion_cost


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


@dataclass(frozen=True)
class Forgetting:
    """What ``forget`` deletes (``rows``, by date), what that costs early, and what it leaves."""

    rows: list[Backup]
    #: Estimated USD of early-deletion charges for the rows still within their minimum.
    early_cost: float
    #: The minimum storage days of the rows' storage classes that have one, by class.
    minimum_days: dict[str, int]
    #: Local snapshots of the rows, which ``forget`` keeps.
    local_snapshots: list[Path]


def assess(rows: list[Backup], src: SourceConfig, now: datetime) -> Forgetting:
    """What deleting ``rows`` (``doomed``'s answer) costs and leaves behind, as of ``now``."""
    cost = sum(
        early_deletion_cost(r.storage_class, r.stored_bytes, _age_days(r, now)) for r in rows
    )
    classes = sorted({r.storage_class for r in rows if r.storage_class in MINIMUM_STORAGE_DAYS})
    names = {r.snapshot for r in rows if r.snapshot is not None}
    local = [s.path for s in snapshots.list_snapshots(src.snapshot_dir) if s.name in names]
    return Forgetting(rows, cost, {c: MINIMUM_STORAGE_DAYS[c] for c in classes}, local)

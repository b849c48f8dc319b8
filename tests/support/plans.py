"""What the planner tests share: the planner's view of a backup, dates written as text, and
applying a plan the way ``backup.py`` does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from btrsendd.planner import Plan


@dataclass(frozen=True)
class Backup:
    """What the planner reads of a backup (``planner.Member``), and nothing else."""

    id: str
    date: date
    chain: str
    kind: Literal["full", "incremental"]


def d(text: str) -> date:
    return date.fromisoformat(text)


def apply(backups: Sequence[Backup], p: Plan, today: date) -> list[Backup]:
    """What backup.py does with a plan: delete the expired chain, record the new backup."""
    kept = [b for b in backups if b not in p.expire]
    if p.action == "none":
        return kept
    backup_id = f"{today}-{p.action}"
    chain = backup_id if p.parent is None else p.parent.chain
    return [*kept, Backup(backup_id, today, chain, p.action)]

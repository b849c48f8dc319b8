"""The planner: which backup (if any) a source is due today, and which chain may go.

Pure functions over the catalog's complete backups of ONE source and a date passed in, so
every scheduling and expiry rule (README, "Configuration") can be tested exhaustively without
a clock, a disk or a bucket.  The caller performs the decision (upload, then delete what
``Plan.expire`` lists).

Chains: a full backup followed by incrementals, each sent relative to the previous backup of
its chain.  Two holes of btrsend are closed here: a chain is only expired when a newer chain
with a full backup exists (never the latest chain, whose newest backup is the next parent), and
no incremental is ever planned on a chain old enough to expire, so no upload depends on a
backup that is about to be deleted.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal, Protocol


@dataclass(frozen=True)
class Schedule:
    """The ``[schedule]`` settings the planner obeys (validated for users by config.py)."""

    backup_days: tuple[int, ...] = (1, 7, 14, 21)
    max_incrementals: int = 11
    chain_lifetime_days: int = 90
    catch_up: bool = True

    def __post_init__(self) -> None:
        # config.py reports these to the user with file and key; they are repeated here because
        # latest_backup_day only terminates for real days of the month, and a zero lifetime
        # would make every chain expire the day it starts.
        if not self.backup_days or not all(1 <= day <= 31 for day in self.backup_days):
            raise ValueError(f"backup_days must be days of the month 1-31, not {self.backup_days}")
        if self.max_incrementals < 0:
            raise ValueError(f"max_incrementals must be >= 0, not {self.max_incrementals}")
        if self.chain_lifetime_days < 1:
            raise ValueError(f"chain_lifetime_days must be >= 1, not {self.chain_lifetime_days}")


class Member(Protocol):
    """What the planner reads of one complete backup (``model.Backup`` has all of it)."""

    @property
    def id(self) -> str: ...

    @property
    def date(self) -> date: ...

    @property
    def chain(self) -> str:
        """The id of the full backup that roots its chain."""
        ...

    @property
    def kind(self) -> Literal["full", "incremental"]: ...


Chain = tuple[Member, ...]  # one chain's backups, oldest (the full) first


@dataclass(frozen=True)
class Plan:
    """One decision for one source: what to upload now and which chain to delete."""

    action: Literal["none", "full", "incremental"]
    parent: Member | None  # set iff action == "incremental": the backup to send relative to
    expire: tuple[Member, ...]  # every backup of the one chain to delete now (may be empty)
    reason: str


def latest_backup_day(backup_days: Sequence[int], on_or_before: date) -> date:
    """The most recent date on or before ``on_or_before`` whose day is in ``backup_days``.

    Walks back month by month because a listed day may not exist in a month (31 in April,
    30 in February): such a month simply has no backup on that day.
    """
    year, month, last_day = on_or_before.year, on_or_before.month, on_or_before.day
    while True:
        days = [day for day in backup_days if day <= last_day]
        if days:
            return date(year, month, max(days))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        last_day = calendar.monthrange(year, month)[1]


def plan(
    schedule: Schedule, backups: Sequence[Member], today: date, *, force: bool = False
) -> Plan:
    """Decide today's backup and expiry for one source from its complete backups (any order).

    ``force`` makes a backup due off-schedule (SIGUSR1, ``backup --force``), but never a second
    backup dated like an existing one: a date names exactly one restorable backup.
    """
    if not backups:
        return Plan("full", None, (), "no backups yet")
    chains = _chains(backups)
    # The latest chain holds the newest backup: the only possible parent of the next one.
    latest = max(chains, key=lambda chain: (chain[-1].date, chain[0].date))
    newest = latest[-1]
    if today < newest.date:
        # Today's date cannot be trusted: an upload would be dated before an existing backup
        # and chain ages would be computed from the wrong day, so do nothing at all.
        return Plan(
            "none",
            None,
            (),
            f"clock moved backwards: {today} is before newest backup {newest.date}",
        )

    cutoff = today - timedelta(days=schedule.chain_lifetime_days)
    expire = _expired_chain(chains, latest, cutoff)
    expiry_note = f"; expire chain {expire[0].chain} (newest {expire[-1].date})" if expire else ""
    due, why = _due(schedule, newest.date, today, force)
    if not due:
        return Plan("none", None, expire, why + expiry_note)
    if len(latest) >= 1 + schedule.max_incrementals:
        return Plan("full", None, expire, f"{why}; chain full ({len(latest)} backups){expiry_note}")
    if newest.date <= cutoff:
        return Plan(
            "full", None, expire, f"{why}; chain expiring (newest {newest.date}){expiry_note}"
        )
    return Plan("incremental", newest, expire, why + expiry_note)


def as_full(p: Plan, reason: str) -> Plan:
    """Turn a planned incremental into a full one, keeping its expiry.

    Used when the parent snapshot is gone locally: a full backup keeps the source backed up
    where an error would stop every future backup.  The expiry stays valid because it never
    touches the latest chain, which is the only chain the incremental depended on.
    """
    if p.action != "incremental":
        raise ValueError(f"only a planned incremental has a parent to replace, not {p.action!r}")
    return replace(p, action="full", parent=None, reason=reason)


def _chains(backups: Sequence[Member]) -> list[Chain]:
    """Group by chain, each chain by date, chains by the date of their full (first) backup."""
    groups: dict[str, list[Member]] = {}
    for backup in backups:
        groups.setdefault(backup.chain, []).append(backup)
    chains = [tuple(sorted(group, key=lambda b: b.date)) for group in groups.values()]
    return sorted(chains, key=lambda chain: (chain[0].date, chain[0].chain))


def _expired_chain(chains: list[Chain], latest: Chain, cutoff: date) -> Chain:
    """The oldest chain if it may be deleted now, else nothing: at most one chain per decision.

    Never the latest chain, and only while another chain starts with a full backup: deleting
    the last restorable chain would leave the source with no backup at all.
    """
    oldest = chains[0]
    if oldest is latest or oldest[-1].date > cutoff:
        return ()
    if not any(chain[0].kind == "full" for chain in chains[1:]):
        return ()
    return oldest


def _due(schedule: Schedule, newest: date, today: date, force: bool) -> tuple[bool, str]:
    """Whether a backup is due today (rule 2 plus ``force``), with the reason either way."""
    if newest == today:
        return False, f"already backed up on {today}"
    if today.day in schedule.backup_days:
        return True, f"backup day {today}"
    if schedule.catch_up:
        missed = latest_backup_day(schedule.backup_days, today)
        if missed > newest:
            return True, f"catch-up for missed backup day {missed}"
    if force:
        return True, "forced"
    return False, "not a backup day"

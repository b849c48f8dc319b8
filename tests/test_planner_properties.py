"""Planner properties: random calendars (machines that run every few days, with outages,
forced runs, re-runs and missing parent snapshots) walked through the planner the way the
daemon would, with every decision and every resulting catalog checked against the rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from btrsendd.planner import Plan, Schedule, as_full, latest_backup_day, plan
from tests.support.plans import Backup, apply, d


@dataclass
class Calendar:
    """When one source's machine runs: every ``every`` days (a NAS woken weekly, say) except
    during outages; on some days forced, re-run, or missing its parent snapshot."""

    every: int
    outages: list[tuple[int, int]]  # (first day offset, length)
    forced: frozenset[int]
    reruns: frozenset[int]
    parent_missing: frozenset[int]

    def runs_on(self, offset: int) -> bool:
        if offset % self.every:
            return False
        return not any(start <= offset < start + length for start, length in self.outages)


@dataclass
class Source:
    """One simulated source: its catalog plus the history the properties are checked against."""

    calendar: Calendar
    backups: list[Backup] = field(default_factory=list)
    ever: list[Backup] = field(default_factory=list)
    expired_chains: set[str] = field(default_factory=set)


HORIZON = 3 * 366

schedules = st.builds(
    Schedule,
    backup_days=st.lists(st.integers(1, 31), min_size=1, max_size=5, unique=True).map(
        lambda days: tuple(sorted(days))
    ),
    max_incrementals=st.integers(0, 13),
    chain_lifetime_days=st.integers(1, 200),
    catch_up=st.booleans(),
)
start_dates = st.one_of(
    st.dates(date(1990, 1, 1), date(2090, 12, 31)),
    st.sampled_from([d("2000-02-28"), d("2000-02-29"), d("1999-12-31"), d("2100-02-27")]),
    st.sampled_from([d("2023-01-31"), d("2023-04-30"), d("2024-02-29"), d("2024-12-31")]),
)
offsets = st.frozensets(st.integers(0, HORIZON), max_size=12)
calendars = st.builds(
    Calendar,
    every=st.just(1) | st.integers(1, 9),
    outages=st.lists(
        st.tuples(st.integers(0, HORIZON), st.integers(1, 10) | st.integers(1, 300)), max_size=16
    ),
    forced=offsets,
    reruns=offsets,
    parent_missing=offsets,
)


def check_decision(
    schedule: Schedule, before: Sequence[Backup], p: Plan, today: date, force: bool, source: Source
) -> None:
    if not before:
        assert (p.action, p.expire) == ("full", ())
        return
    newest = max(before, key=lambda b: b.date)
    # Rule 2, stated as "a backup day is owed": backups happen exactly when owed or forced,
    # and never dated on or before an existing one.
    if schedule.catch_up:
        owed = latest_backup_day(schedule.backup_days, today) > newest.date
    else:
        owed = today.day in schedule.backup_days
    assert (p.action != "none") == (today > newest.date and (owed or force)), p.reason
    if p.action == "incremental":
        assert p.parent is not None and p.parent in before
        assert p.parent == newest, "parent is not the newest backup of the latest chain"
        assert p.parent.date > today - timedelta(days=schedule.chain_lifetime_days)
    else:
        assert p.parent is None
    if p.expire:
        chain = p.expire[0].chain
        assert set(p.expire) == {b for b in before if b.chain == chain}, "not one whole chain"
        assert chain != newest.chain, "expired the latest chain"
        assert any(b.kind == "full" and b.chain != chain for b in before), "no newer full"
        age = (today - max(b.date for b in p.expire)).days
        assert age >= schedule.chain_lifetime_days, f"expired a chain only {age} days old"
        source.expired_chains.add(chain)


def check_catalog(schedule: Schedule, source: Source, today: date) -> None:
    state = source.backups
    assert len({b.date for b in source.ever}) == len(source.ever), "two backups on one date"
    by_chain: dict[str, list[Backup]] = {}
    for backup in state:
        by_chain.setdefault(backup.chain, []).append(backup)
    for chain, members in by_chain.items():
        assert len(members) <= 1 + schedule.max_incrementals
        first = min(members, key=lambda b: b.date)
        assert (first.kind, first.id) == ("full", chain), "a chain without its full"
    # Restorable: every backup ever made stays, with its whole chain, until its chain expires.
    alive = {b for b in source.ever if b.chain not in source.expired_chains}
    assert alive == set(state)
    if state and schedule.catch_up:
        owed = latest_backup_day(schedule.backup_days, today)
        assert max(b.date for b in state) >= owed, f"backup day {owed} still owed on {today}"
    if state and today.day in schedule.backup_days:
        assert max(b.date for b in state) == today


def run_once(schedule: Schedule, source: Source, today: date, offset: int) -> None:
    cal = source.calendar
    before = source.backups
    # Odd days see the catalog in reverse: the planner must not depend on its order.
    force = offset in cal.forced
    p = plan(schedule, before[::-1] if offset % 2 else before, today, force=force)
    check_decision(schedule, before, p, today, force, source)
    if p.action == "incremental" and offset in cal.parent_missing:
        p = as_full(p, "parent snapshot missing")
    source.backups = apply(before, p, today)
    if p.action != "none":
        source.ever.append(source.backups[-1])
    check_catalog(schedule, source, today)


@settings(max_examples=200, deadline=None)
@given(
    schedule=schedules,
    start=start_dates,
    days=st.integers(1, HORIZON),
    cals=st.lists(calendars, min_size=1, max_size=3),
)
def test_random_calendars_keep_every_invariant(
    schedule: Schedule, start: date, days: int, cals: list[Calendar]
) -> None:
    sources = [Source(cal) for cal in cals]
    for offset in range(days):
        today = start + timedelta(days=offset)
        for source in sources:
            if not source.calendar.runs_on(offset):
                continue
            run_once(schedule, source, today, offset)
            if offset in source.calendar.reruns:
                run_once(schedule, source, today, offset)
                # A clock that jumps back a day must do nothing at all, even when forced.
                newest = max(b.date for b in source.backups)
                back = plan(schedule, source.backups, newest - timedelta(days=1), force=True)
                assert (back.action, back.expire) == ("none", ())

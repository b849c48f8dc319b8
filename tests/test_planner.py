"""Planner tests: btrsend's scenario table, each hole of btrsend the planner closes, and
property tests that walk random calendars through the planner the way the daemon would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btrsendd.planner import Plan, Schedule, as_full, latest_backup_day, plan


@dataclass(frozen=True)
class Backup:
    """What the planner reads of a backup (``planner.Member``), and nothing else."""

    id: str
    date: date
    chain: str
    kind: Literal["full", "incremental"]


DEFAULT = Schedule()
EVERY_DAY = tuple(range(1, 32))


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


def chain_of(start: str, *later: str) -> list[Backup]:
    """A complete chain: a full backup on ``start`` and incrementals on ``later``."""
    full = Backup(f"{start}-full", d(start), f"{start}-full", "full")
    return [full, *(Backup(f"{day}-incremental", d(day), full.id, "incremental") for day in later)]


def walk(schedule: Schedule, days: Sequence[str]) -> list[Backup]:
    """Run the planner on each day in turn, from no backups, applying every decision."""
    state: list[Backup] = []
    for day in days:
        state = apply(state, plan(schedule, state, d(day)), d(day))
    return state


# --- btrsend's scenario, row by row -------------------------------------------------------

# fmt: off
CHAIN_1 = [
    "2000-01-01", "2000-01-07", "2000-01-14", "2000-01-21", "2000-02-01", "2000-02-07",
    "2000-02-14", "2000-02-21", "2000-03-01", "2000-03-07", "2000-03-14", "2000-03-21",
]
CHAIN_2 = [
    "2000-04-01", "2000-04-07", "2000-04-14", "2000-04-21", "2000-05-01", "2000-05-07",
    "2000-05-14", "2000-05-21", "2000-06-01", "2000-06-07", "2000-06-14", "2000-06-21",
]
# fmt: on

# (date, action, parent's date, dates expired)
SEED_TABLE: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("2000-01-01", "full", None, ()),
    ("2000-01-01", "none", None, ()),
    ("2000-01-02", "none", None, ()),
    ("2000-01-07", "incremental", "2000-01-01", ()),
    ("2000-01-08", "none", None, ()),
    *((day, "incremental", parent, ()) for parent, day in pairwise(CHAIN_1[1:])),
    ("2000-04-01", "full", None, ()),
    *((day, "incremental", parent, ()) for parent, day in pairwise(CHAIN_2[:-1])),
    ("2000-06-21", "incremental", "2000-06-14", tuple(CHAIN_1)),
    ("2000-07-01", "full", None, ()),
]


def test_btrsend_scenario_table() -> None:
    state: list[Backup] = []
    decisions = []
    for row in SEED_TABLE:
        today = d(row[0])
        p = plan(DEFAULT, state, today)
        parent = None if p.parent is None else str(p.parent.date)
        decisions.append((row[0], p.action, parent, tuple(str(b.date) for b in p.expire)))
        state = apply(state, p, today)
    assert decisions == SEED_TABLE
    assert len(SEED_TABLE) == 28  # the table's rows, with the two ellipses written out


def test_btrsend_scenario_reasons() -> None:
    assert plan(DEFAULT, [], d("2000-01-01")).reason == "no backups yet"
    one = chain_of("2000-01-01")
    assert plan(DEFAULT, one, d("2000-01-02")).reason == "not a backup day"
    assert plan(DEFAULT, one, d("2000-01-07")).reason == "backup day 2000-01-07"
    chain_1 = chain_of(*CHAIN_1)
    assert "chain full (12 backups)" in plan(DEFAULT, chain_1, d("2000-04-01")).reason


# --- rule 2: due days, catch-up, force ----------------------------------------------------


def test_first_backup_is_full_on_any_day() -> None:
    p = plan(DEFAULT, [], d("2000-01-03"))
    assert (p.action, p.parent, p.expire) == ("full", None, ())


def test_catch_up_makes_up_a_missed_day_once() -> None:
    state = chain_of("2000-01-01")
    p = plan(DEFAULT, state, d("2000-01-10"))
    assert p.action == "incremental"
    assert p.reason == "catch-up for missed backup day 2000-01-07"
    state = apply(state, p, d("2000-01-10"))
    assert plan(DEFAULT, state, d("2000-01-11")).action == "none"


def test_without_catch_up_a_missed_day_is_lost() -> None:
    schedule = Schedule(catch_up=False)
    assert plan(schedule, chain_of("2000-01-01"), d("2000-01-10")).action == "none"
    assert plan(schedule, chain_of("2000-01-01"), d("2000-01-14")).action == "incremental"


def test_catch_up_skips_days_a_month_does_not_have() -> None:
    schedule = Schedule(backup_days=(31,))
    state = chain_of("2000-01-31")
    assert plan(schedule, state, d("2000-03-01")).action == "none"  # no 2000-02-31
    assert plan(schedule, state, d("2000-03-30")).action == "none"
    assert plan(schedule, state, d("2000-04-15")).action == "incremental"  # missed 03-31


@pytest.mark.parametrize(
    ("days", "on_or_before", "expected"),
    [
        ((1, 7, 14, 21), "2000-01-10", "2000-01-07"),
        ((1, 7, 14, 21), "2000-01-07", "2000-01-07"),
        ((7,), "2000-01-03", "1999-12-07"),
        ((31,), "2000-03-01", "2000-01-31"),
        ((30,), "2000-03-10", "2000-01-30"),
        ((29,), "2000-03-05", "2000-02-29"),  # 2000 is a leap year
        ((29,), "2001-03-05", "2001-01-29"),
        ((29,), "2100-03-05", "2100-01-29"),  # 2100 is not
        ((31, 15), "2000-05-01", "2000-04-15"),
    ],
)
def test_latest_backup_day(days: tuple[int, ...], on_or_before: str, expected: str) -> None:
    assert latest_backup_day(days, d(on_or_before)) == d(expected)


def test_force_backs_up_off_schedule() -> None:
    p = plan(DEFAULT, chain_of("2000-01-01"), d("2000-01-03"), force=True)
    assert (p.action, p.reason) == ("incremental", "forced")
    assert p.parent == chain_of("2000-01-01")[0]


def test_force_never_makes_a_second_backup_on_a_date() -> None:
    p = plan(DEFAULT, chain_of("2000-01-01"), d("2000-01-01"), force=True)
    assert (p.action, p.reason) == ("none", "already backed up on 2000-01-01")


def test_clock_moved_backwards_does_nothing_at_all() -> None:
    # Chain 1 would expire on 2000-06-21; a clock reading January must neither back up
    # (a backup dated before existing ones) nor expire.
    state = chain_of(*CHAIN_1) + chain_of(*CHAIN_2)
    for force in (False, True):
        p = plan(DEFAULT, state, d("2000-01-07"), force=force)
        assert (p.action, p.parent, p.expire) == ("none", None, ())
        assert "clock moved backwards" in p.reason


def test_input_order_does_not_matter() -> None:
    state = chain_of(*CHAIN_1) + chain_of(*CHAIN_2[:-1])
    for today in ("2000-06-21", "2000-06-22", "2000-07-01"):
        assert plan(DEFAULT, state[::-1], d(today)) == plan(DEFAULT, state, d(today))


# --- rules 3 and 4, and the holes closed --------------------------------------------------


def test_max_incrementals_zero_makes_every_backup_full() -> None:
    schedule = Schedule(max_incrementals=0)
    state = walk(schedule, ["2000-01-01", "2000-01-07", "2000-01-14", "2000-01-21"])
    assert [b.kind for b in state] == ["full"] * 4
    assert len({b.chain for b in state}) == 4


def test_gap_longer_than_lifetime_starts_a_new_chain_then_expires_the_old() -> None:
    old = chain_of("2000-01-01", "2000-01-07")
    p = plan(DEFAULT, old, d("2000-06-01"))
    # Incremental on a chain about to be deleted would be unrestorable; deleting the only
    # chain before the new full completes would leave nothing restorable.
    assert (p.action, p.expire) == ("full", ())
    assert "chain expiring (newest 2000-01-07)" in p.reason
    state = apply(old, p, d("2000-06-01"))
    again = plan(DEFAULT, state, d("2000-06-01"))
    assert (again.action, again.expire) == ("none", tuple(old))
    assert apply(state, again, d("2000-06-01")) == state[-1:]


def test_never_an_incremental_on_an_expiring_chain() -> None:
    schedule = Schedule(backup_days=EVERY_DAY, chain_lifetime_days=10)
    state = chain_of("2000-01-01")
    assert plan(schedule, state, d("2000-01-10")).action == "incremental"  # 9 days old
    assert plan(schedule, state, d("2000-01-11")).action == "full"  # 10 days old: expiring


def test_expiry_boundary_is_the_lifetime_in_days() -> None:
    state = chain_of(*CHAIN_1) + chain_of("2000-04-01")
    assert plan(DEFAULT, state, d("2000-06-18")).expire == ()  # 89 days after 03-21
    assert plan(DEFAULT, state, d("2000-06-19")).expire == tuple(chain_of(*CHAIN_1))


def test_expiry_does_not_wait_for_a_due_backup() -> None:
    state = chain_of(*CHAIN_1) + chain_of(*CHAIN_2[:-1])
    p = plan(DEFAULT, state, d("2000-06-20"))
    assert (p.action, len(p.expire)) == ("none", 12)
    assert p.reason.startswith("not a backup day; expire chain 2000-01-01-full")


def test_at_most_one_chain_expires_per_decision() -> None:
    schedule = Schedule(max_incrementals=0, chain_lifetime_days=10)
    starts = ["2000-01-01", "2000-01-07", "2000-01-14", "2000-01-21"]
    state = [backup for start in starts for backup in chain_of(start)]
    expired = []
    for _ in range(5):
        p = plan(schedule, state, d("2000-03-01"))
        expired.append([str(b.date) for b in p.expire])
        state = apply(state, p, d("2000-03-01"))
    # The full of 03-01 comes first, then one old chain per decision; never the newest.
    assert expired == [["2000-01-01"], ["2000-01-07"], ["2000-01-14"], ["2000-01-21"], []]
    assert [str(b.date) for b in state] == ["2000-03-01"]


def test_a_single_old_chain_is_never_expired() -> None:
    p = plan(Schedule(catch_up=False), chain_of("2000-01-01"), d("2001-01-02"))
    assert (p.action, p.expire) == ("none", ())


def test_the_chain_holding_the_newest_backup_is_latest_and_never_expired() -> None:
    # An inconsistent catalog (e.g. rebuilt after a clock jump): chain A started first but
    # holds the newest backup, so A is the latest chain whatever its start date.
    chain_a = chain_of("2000-01-01", "2000-01-14")
    state = [*chain_a, *chain_of("2000-01-07")]
    assert plan(DEFAULT, state, d("2000-01-21")).parent == chain_a[-1]
    assert plan(DEFAULT, state, d("2000-06-01")).expire == ()


def test_no_expiry_without_a_newer_full() -> None:
    # A catalog rebuilt without the newer chain's full: that chain cannot be restored, so
    # the old one must stay.
    old = chain_of("2000-01-01")
    orphan = Backup("2000-05-07-incremental", d("2000-05-07"), "2000-05-01-full", "incremental")
    assert plan(DEFAULT, [*old, orphan], d("2000-06-01")).expire == ()


def test_as_full_replaces_the_parent_and_keeps_the_expiry() -> None:
    state = chain_of(*CHAIN_1) + chain_of(*CHAIN_2[:-1])
    p = plan(DEFAULT, state, d("2000-06-21"))
    full = as_full(p, "parent snapshot 2000-06-14 missing")
    assert (full.action, full.parent, full.expire) == ("full", None, p.expire)
    assert full.reason == "parent snapshot 2000-06-14 missing"
    with pytest.raises(ValueError):
        as_full(full, "twice")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backup_days": ()},
        {"backup_days": (0, 7)},
        {"backup_days": (32,)},
        {"max_incrementals": -1},
        {"chain_lifetime_days": 0},
    ],
)
def test_schedule_rejects_impossible_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Schedule(**kwargs)  # type: ignore[arg-type]


# --- properties over random calendars ------------------------------------------------------


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

"""Planner tests: btrsend's scenario table, and each hole of btrsend the planner closes, one
example at a time.  Random calendars walked through the planner are in
``test_planner_properties.py``."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest

from btrsendd.planner import Schedule, as_full, latest_backup_day, plan
from tests.support.plans import Backup, apply, d

DEFAULT = Schedule()
EVERY_DAY = tuple(range(1, 32))


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

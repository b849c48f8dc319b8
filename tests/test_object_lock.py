"""The lock dates of ``object_lock.py``: until when a chain's objects are locked."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from btrsendd.object_lock import chain_lock_until

TODAY = date(2026, 12, 5)


@pytest.mark.parametrize(
    ("newest", "lifetime", "minimum", "margin", "until"),
    [
        # The chain can expire 90 days after its newest backup; a week's margin on top.
        (date(2026, 12, 1), 90, 0, 7, date(2027, 3, 8)),
        # DEEP_ARCHIVE bills 180 days anyway: deleting sooner saves nothing.
        (date(2026, 12, 1), 90, 180, 7, date(2027, 6, 6)),
        # A backup dated long ago still gets a lock that holds, counted from today.
        (date(2000, 1, 1), 90, 0, 7, date(2026, 12, 12)),
        (date(2026, 12, 5), 1, 0, 1, date(2026, 12, 7)),
    ],
)
def test_chain_lock_until(
    newest: date, lifetime: int, minimum: int, margin: int, until: date
) -> None:
    got = chain_lock_until(
        newest, lifetime_days=lifetime, minimum_days=minimum, margin_days=margin, today=TODAY
    )
    assert got == datetime(until.year, until.month, until.day, tzinfo=UTC)


def test_a_growing_chain_is_locked_longer() -> None:
    dates = [date(2026, 11, d) for d in (1, 7, 14, 21)]
    untils = [
        chain_lock_until(d, lifetime_days=90, minimum_days=0, margin_days=7, today=TODAY)
        for d in dates
    ]
    assert untils == sorted(untils) and len(set(untils)) == len(untils)

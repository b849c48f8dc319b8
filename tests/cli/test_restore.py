"""What ``restore`` (and ``verify --deep``) show before spending anything: ``plan_lines`` of
``RestoreJob.plan``, for chains whose objects stand every way a survey can find them.

The expected lines are the ones btrsendd printed when the engine still worded the plan.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from btrsendd.cli.restore import plan_lines
from btrsendd.config import RestoreConfig
from btrsendd.errors import UsageError
from btrsendd.layout import Located
from btrsendd.model import Backup, RestoreRequest
from btrsendd.pricing import Prices
from btrsendd.restore import RestoreJob, Survey
from btrsendd.restore_plan import RestorePlan
from tests.cli.helpers import backup, located

PRICES = Prices.from_config(RestoreConfig())

LEGEND = (
    "  Thawed copies stay readable for 7 days.  Estimates from AWS list prices (us-east-1) "
    "or [restore] in the configuration."
)


FULL = backup(0, date(2000, 1, 1), "DEEP_ARCHIVE", 2)
GLACIER = backup(1, date(2000, 1, 7), "GLACIER", 1)
STANDARD = backup(2, date(2000, 1, 9), "STANDARD", 1)
LOCAL = backup(0, date(2000, 1, 1), "local", 2)
ROWS = {
    FULL: "  2000-01-01  full          667.6 MiB    2 volume(s)  DEEP_ARCHIVE  b0",
    GLACIER: "  2000-01-07  incremental     1.3 GiB    1 volume(s)  GLACIER  b1",
    STANDARD: "  2000-01-09  incremental     2.0 GiB    1 volume(s)  STANDARD  b2",
}


def requested(volumes: list[Located], tier: str) -> dict[str, RestoreRequest]:
    at = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    return {v.key: RestoreRequest(v.key, v.backup.id, tier, at) for v in volumes}


def plan(chain: list[Backup], survey: Survey, tier: str) -> RestorePlan:
    volumes = [v for b in chain for v in located(b)]
    return RestoreJob(None, chain, volumes, survey).plan(PRICES, tier)  # type: ignore[arg-type]


def test_local_objects_are_readable_and_free() -> None:
    volumes = located(LOCAL)
    lines = plan_lines(plan([LOCAL], Survey(volumes, [], [], {}), "Standard"))
    assert lines == [
        "  2000-01-01  full          667.6 MiB    2 volume(s)  local  b0",
        "  2 object(s), 667.6 MiB stored: 2 readable now",
    ]


def test_readable_objects_cost_their_download() -> None:
    volumes = located(FULL) + located(GLACIER) + located(STANDARD)
    lines = plan_lines(plan([FULL, GLACIER, STANDARD], Survey(volumes, [], [], {}), "Bulk"))
    assert lines == [
        *ROWS.values(),
        "  4 object(s), 3.9 GiB stored: 4 readable now",
        "  estimated cost (download): $0.35",
    ]


def test_pending_objects_name_the_requests_made() -> None:
    full, inc = located(FULL), located(GLACIER)
    requests = {**requested(full, "Bulk"), **requested(inc, "Standard")}
    lines = plan_lines(plan([FULL, GLACIER], Survey([], full + inc, [], requests), "Standard"))
    assert lines == [
        ROWS[FULL],
        ROWS[GLACIER],
        "  3 object(s), 2.0 GiB stored: 0 readable now, 3 being restored (requested Bulk at "
        "2001-02-03 04:05 UTC, Standard at 2001-02-03 04:05 UTC)",
        "  estimated cost (download): $0.18",
    ]
    # Requested by someone else (not recorded here): pending, without a request to name.
    lines = plan_lines(plan([FULL], Survey(full[:1], full[1:], [], {}), "Standard"))
    assert lines[1:] == [
        "  2 object(s), 667.6 MiB stored: 1 readable now, 1 being restored",
        "  estimated cost (download): $0.06",
    ]


def test_objects_to_request_show_every_tier_and_mark_the_chosen_one() -> None:
    full, inc, standard = located(FULL), located(GLACIER), located(STANDARD)
    survey = Survey(standard, inc, full, requested(inc, "Bulk"))
    lines = plan_lines(plan([FULL, GLACIER, STANDARD], survey, "Bulk"))
    assert lines == [
        *ROWS.values(),
        "  4 object(s), 3.9 GiB stored: 1 readable now, 1 being restored (requested Bulk at "
        "2001-02-03 04:05 UTC), 2 to request",
        "  tier       wait               estimated cost",
        "  Standard   within 12 hours    $0.37",
        "  Bulk       within 48 hours    $0.35  <- --tier",
        LEGEND,
    ]
    lines = plan_lines(plan([GLACIER], Survey([], [], inc, {}), "Expedited"))
    assert lines[1:] == [
        "  1 object(s), 1.3 GiB stored: 0 readable now, 1 to request",
        "  tier       wait               estimated cost",
        "  Expedited  1-5 minutes        $0.17  <- --tier",
        "  Standard   3-5 hours          $0.13",
        "  Bulk       5-12 hours         $0.12",
        LEGEND,
    ]


def test_a_tier_the_storage_class_lacks_is_refused() -> None:
    full = located(FULL)
    with pytest.raises(UsageError, match="DEEP_ARCHIVE cannot be restored with tier Expedited"):
        plan([FULL], Survey([], [], full, {}), "Expedited")

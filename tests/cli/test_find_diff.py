"""``btrsendd find`` and ``btrsendd diff`` on real backups: what they say of each day is what
the day's snapshot holds, from the stored file indexes alone."""

from __future__ import annotations

import json
from typing import Any

import pytest

from btrsendd.fileindex.history import matcher
from tests.support.filechain import DAYS, changed_paths, expected_changes, snapshot_state
from tests.support.world import World

pytestmark = pytest.mark.slow

DATES = ("2000-01-01", "2000-01-07", "2000-01-14", "2000-01-21")


@pytest.fixture
def backed_up(world: World) -> World:
    """The first days of ``filechain.DAYS``, one backup each (a full and three incrementals)."""
    world.schedule = "max_incrementals = 5"
    for day, change in zip(DATES, DAYS[: len(DATES)], strict=True):
        change(world.source)
        world.run("backup", "--date", day)
    assert [b["kind"] for b in world.list()] == ["full"] + ["incremental"] * 3
    return world


def run_json(world: World, *args: str) -> Any:
    home = str(world.key.secret_home)
    return json.loads(world.run(*args, "--source", "data", "--gnupg-home", home, "--json").stdout)


@pytest.mark.parametrize("pattern", ["*.txt", "docs/*", "/a/c/deep.txt"])
def test_find_lists_every_day_a_match_existed(backed_up: World, pattern: str) -> None:
    found = run_json(backed_up, "find", pattern)
    assert found["unseen"] == []
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    for match in found["matches"]:
        for b in match["backups"]:
            seen[(b["date"], match["path"])] = (match["size"], match["mtime_ns"])
    match = matcher(pattern)
    expected = {}
    for day in DATES:
        truth = snapshot_state(backed_up.snapshots / day)
        for path, s in truth.items():
            if path and match(path):
                expected[(day, path)] = (s.size, s.mtime_ns)
    assert seen == expected


def test_diff_between_two_days_is_the_snapshots_difference(backed_up: World) -> None:
    first, second = DATES[0], DATES[2]
    found = run_json(backed_up, "diff", "--from", first, "--to", "2000-01-16")
    assert (found["from"]["date"], found["to"]["date"]) == (first, second)
    old = snapshot_state(backed_up.snapshots / first)
    new = snapshot_state(backed_up.snapshots / second)
    expected = expected_changes(old, new)
    assert {e["path"] for e in found["added"]} == expected["added"]
    assert {e["path"] for e in found["deleted"]} == expected["deleted"]
    assert {(r["from"], r["to"]) for r in found["renamed"]} == expected["renamed"]
    changed = changed_paths(old, new, backed_up.snapshots / first, backed_up.snapshots / second)
    assert {c["after"]["path"] for c in found["changed"]} == changed


def test_diff_for_people_and_its_errors(backed_up: World) -> None:
    home = str(backed_up.key.secret_home)
    args = ("--source", "data", "--gnupg-home", home)
    out = backed_up.run("diff", *args, "--from", DATES[1], "--to", DATES[2]).stdout.decode()
    lines = out.splitlines()
    assert lines[0].startswith(f"data from {DATES[1]} (") and "R a/ -> moved-b/" in lines
    assert lines[-1].endswith("renamed")
    proc = backed_up.run("diff", *args, "--from", DATES[2], "--to", DATES[1], check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        f"btrsendd: error: --from {DATES[2]} is after --to {DATES[1]}; swap them"
    ]
    proc = backed_up.run("find", *args, "", check=False)
    assert proc.returncode == 2 and b"the pattern is empty" in proc.stderr

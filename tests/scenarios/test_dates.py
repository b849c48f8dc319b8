"""Dates cannot destroy history: future dates are refused, and `forget` undoes a mistake.

A clock that jumps ahead is simulated with libfaketime (the real date as the process sees it),
so the backup it makes is exactly what a daemon on such a machine would make.
"""

from __future__ import annotations

import contextlib
import glob
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.backups import OnBackend, error_lines, events, stored_volumes, world_storage
from tests.support.daemons import Daemon
from tests.support.trees import assert_same_tree, mutate, populate
from tests.support.world import World

DAYS = [date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14), date(2000, 1, 21)]
AHEAD = date.today() + timedelta(days=365)


@pytest.fixture
def world(on_backend: OnBackend) -> World:
    """Four days backed up on moto (one chain: a full and three incrementals)."""
    w = on_backend("moto")
    w.schedule = "max_incrementals = 5"
    populate(w.source)
    for n, day in enumerate(DAYS):
        if n:
            mutate(w.source, n)
        w.run("backup", "--date", day.isoformat())
    for day in (DAYS[0], DAYS[-1]):
        # Copies outside snapshot_dir: a backup on today's date prunes snapshots from 2000.
        subprocess.run(
            ["btrfs", "subvolume", "snapshot", "-r", w.snapshots / str(day), kept(w, day)],
            check=True,
            capture_output=True,
        )
    return w


def kept(world: World, day: date) -> Path:
    return world.root / f"kept-{day}"


@contextlib.contextmanager
def a_year_ahead(world: World) -> Iterator[None]:
    """Run what follows with the clock a year ahead, as on a machine whose clock jumped."""
    [library] = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")  # Debian's faketime
    world.env["FAKETIME"] = "+365d"
    world.env["LD_PRELOAD"] = library
    try:
        yield
    finally:
        world.env.pop("FAKETIME")
        world.env.pop("LD_PRELOAD")


def listing(world: World) -> list[tuple[str, str, str]]:
    return [(b["date"], b["kind"], b["state"]) for b in world.list()]


def archive_keys(world: World) -> set[str]:
    return {o.key for o in world_storage(world).list("")}


def one_error(proc: Any, status: int) -> str:
    text = proc.stderr.decode()
    assert proc.returncode == status, text
    assert "Traceback" not in text and "internal error" not in text, text
    [line] = error_lines(proc)
    return str(line)


def restores_each_day(world: World, make_target: Any) -> None:
    for day in (DAYS[0], DAYS[-1]):
        target = make_target(f"check-{day}")
        world.restore(day, target)
        assert_same_tree(kept(world, day), target / day.isoformat())


@pytest.mark.parametrize("command", ["backup", "backup-stdin"])
def test_date_after_tomorrow_is_refused_and_changes_nothing(world: World, command: str) -> None:
    before, keys = listing(world), archive_keys(world)
    snaps = sorted(p.name for p in world.snapshots.iterdir())
    args = [command, "--date", AHEAD.isoformat()]
    if command == "backup-stdin":
        args += ["--source", "data"]
    proc = world.run(*args, check=False, input=b"")
    line = one_error(proc, 2)
    assert str(AHEAD) in line and "future" in line
    assert proc.stdout == b""  # backup-stdin announced no stream
    assert listing(world) == before and archive_keys(world) == keys
    assert sorted(p.name for p in world.snapshots.iterdir()) == snaps


def test_tomorrow_is_accepted(world: World) -> None:
    tomorrow = date.today() + timedelta(days=1)
    world.run("backup", "--date", tomorrow.isoformat(), "--force")
    assert listing(world)[-1][0] == tomorrow.isoformat()


def test_clock_that_jumped_ahead_is_reported_and_forget_undoes_it(
    world: World, make_btrfs: Any
) -> None:
    real = listing(world)
    with a_year_ahead(world):
        world.run("backup")  # the clock says a year ahead: a full backup dated then
    assert listing(world) == [*real, (AHEAD.isoformat(), "full", "complete")]

    # Back on the real date: every backup is refused, and says how to get out of it.
    line = one_error(world.run("backup", check=False), 1)
    assert "clock" in line and f"forget --source data --date {AHEAD}" in line
    report = json.loads(world.run("status", "--json").stdout)
    [source] = report["sources"]
    assert "dated after today" in source["problem"] and str(AHEAD) in source["problem"]

    # forget shows what goes and refuses to act without a terminal or --yes.
    dry = world.run("forget", "--source", "data", "--date", AHEAD.isoformat(), "--dry-run")
    out = dry.stdout.decode()
    assert AHEAD.isoformat() in out and "early-deletion" in out and "nothing was deleted" in out
    asked = world.run("forget", "--source", "data", "--date", AHEAD.isoformat(), check=False)
    assert "pass --yes" in one_error(asked, 2)
    assert len(listing(world)) == len(real) + 1

    bogus = world.list()[-1]
    world.run("forget", "--source", "data", "--date", AHEAD.isoformat(), "--yes")
    assert listing(world) == real
    assert not [k for k in archive_keys(world) if bogus["id"] in k]
    # A rebuild from the bucket does not bring it back, and real backups go on.
    world.run("catalog", "rebuild", "--force")
    assert listing(world) == real
    restores_each_day(world, make_btrfs)
    world.run("backup")
    assert listing(world)[-1] == (date.today().isoformat(), "full", "complete")


def test_forget_in_the_middle_of_a_chain_takes_the_later_members(
    world: World, make_btrfs: Any
) -> None:
    third = world.list()[2]
    proc = world.run("forget", "--source", "data", "--date", DAYS[2].isoformat(), "--yes")
    out = proc.stdout.decode()
    assert "and the 1 later backup(s) of its chain" in out
    assert listing(world) == [
        (DAYS[0].isoformat(), "full", "complete"),
        (DAYS[1].isoformat(), "incremental", "complete"),
    ]
    assert stored_volumes(world, third) == []
    assert events(proc, "backup.forgotten")
    # The next backup continues the chain from what is left.
    world.run("backup", "--date", "2000-02-01")
    assert world.list()[-1]["parent"] == DAYS[1].isoformat()
    target = make_btrfs("check")
    world.restore(date(2000, 2, 1), target)
    assert_same_tree(world.snapshots / "2000-02-01", target / "2000-02-01")


def test_forget_a_date_without_a_backup(world: World) -> None:
    proc = world.run("forget", "--source", "data", "--date", "2000-01-02", "--yes", check=False)
    line = one_error(proc, 2)
    assert "no backup dated 2000-01-02" in line and "2000-01-21" in line


def test_interrupted_forget_is_finished_by_the_next_backup(world: World) -> None:
    # What a forget killed after marking its backups leaves: rows `expiring`, objects partly
    # deleted (here: the newest manifest).
    newest = world.list()[-1]
    db = sqlite3.connect(world.work / "state" / "catalog.db")
    with db:
        db.execute("UPDATE backups SET state = 'expiring' WHERE id = ?", (newest["id"],))
    db.close()
    storage = world_storage(world)
    storage.delete([f"host1/data/{newest['id']}/manifest.json"])
    proc = world.run("backup", "--date", "2000-02-01")
    assert events(proc, "backup.deletion_finished")
    assert [b["date"] for b in world.list()][-2:] == [DAYS[2].isoformat(), "2000-02-01"]
    assert not [k for k in archive_keys(world) if newest["id"] in k]


def test_daemon_after_a_clock_jump_reports_and_expires_nothing(world: World) -> None:
    with a_year_ahead(world):
        world.run("backup")
    before, keys = listing(world), archive_keys(world)
    daemon = Daemon(world, {"BTRSENDD_TEST_CRON_SECONDS": "1"})
    try:
        for n in (1, 2):
            failed = daemon.wait_for("backup.failed", count=n)
            assert "clock" in failed["reason"] and "forget" in failed["reason"]
        report = json.loads(world.run("status", "--json").stdout)
        assert "dated after today" in report["sources"][0]["problem"]
    finally:
        daemon.stop()
    assert listing(world) == before and archive_keys(world) == keys
    assert not daemon.events("chain.expired") and not daemon.events("snapshot.deleted")

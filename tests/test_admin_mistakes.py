"""What an admin's slip (a wrong date, a wrong path) does: one clear error, nothing lost."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest

from tests.backed_up import error_lines
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.trees import mutate, populate
from tests.world import World, local_world

DAYS = [date(2000, 1, 1), date(2000, 1, 7)]


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source)
    for n, day in enumerate(DAYS):
        if n:
            mutate(w.source, n)
        w.run("backup", "--date", day.isoformat())
    return w


def test_backup_stdin_before_the_newest_backup_is_refused(world: World) -> None:
    """The clock went back (or --date is wrong): backup-stdin says so, as backup does,
    instead of exiting 0 as if no backup were due."""
    before = world.list()
    stream = subprocess.run(
        ["btrfs", "send", str(world.snapshots / DAYS[0].isoformat())],
        capture_output=True,
        check=True,
    ).stdout
    proc = world.run(
        "backup-stdin", "--source", "data", "--date", "1999-12-21", input=stream, check=False
    )
    assert proc.returncode == 1, proc.stderr.decode()
    assert proc.stdout == b""  # no stream was asked for
    [line] = error_lines(proc)
    assert "earlier than the newest backup (2000-01-07)" in line
    assert "forget --source data --date 2000-01-07" in line
    assert world.list() == before

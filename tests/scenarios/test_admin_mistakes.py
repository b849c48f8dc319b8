"""What an admin's slip (a wrong date, a wrong path) does: one clear error, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.backups import back_up, error_lines
from tests.support.daemons import Daemon
from tests.support.trees import populate
from tests.support.world import World, local_world, make_world

DAYS = [date(2000, 1, 1), date(2000, 1, 7)]
NOBODY = 65534


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    back_up(w, DAYS)
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


def test_reload_refuses_a_configuration_others_can_change(world: World) -> None:
    """A new file moved into place keeps its owner: a reload must not trust it when the
    start would not have."""
    daemon = Daemon(world)
    try:
        new = world.config.with_name("new.toml")
        new.write_text(
            world.config.read_text().replace("[schedule]", '[schedule]\ncron = "5 4 * * *"')
        )
        new.chmod(0o600)
        os.chown(new, NOBODY, NOBODY)  # written by a user, then `mv` by the admin
        new.replace(world.config)
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_for("config.reload_failed")
        assert "belongs to user nobody" in failed["error"]
        assert not daemon.events("config.reloaded")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_archive_around_a_source_is_refused(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    """storage.path set to the pool that holds the sources: the archive's directory for
    source "data" is the source itself, whose files verify --clean once deleted as orphans."""
    root = make_btrfs("pool")
    w = make_world(root, tmp_path, gpg_key, f'backend = "local"\npath = "{root}"')
    populate(w.source)
    files = sorted(p.relative_to(w.source) for p in w.source.rglob("*"))
    for args in (["check-config"], ["backup", "--date", "2000-01-01"], ["verify", "--clean"]):
        proc = w.run(*args, check=False)
        assert proc.returncode == 2, proc.stdout.decode() + proc.stderr.decode()
        text = proc.stdout.decode() + proc.stderr.decode()
        assert f"{root} holds source 'data' ({w.source})" in text, text
    assert sorted(p.relative_to(w.source) for p in w.source.rglob("*")) == files

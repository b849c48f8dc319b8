"""The configuration file: every command warns when others can read it (it names the bucket
and its keys) and refuses to run when others can change it (whoever can, can have root back up
any subvolume, unencrypted, to where they can read it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from btrsendd.permissions import program_problem
from tests.permissions.helpers import FIRST, NOBODY, one_error
from tests.support.backups import error_lines
from tests.support.world import World

# -- the configuration file ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_mode", "text"),
    [(0o644, "readable by every user (mode 0644)"), (0o640, "readable by its group (mode 0640)")],
)
def test_every_command_warns_about_a_config_file_others_can_read(
    world: World, file_mode: int, text: str
) -> None:
    world.run("backup", "--date", FIRST)
    world.config.chmod(file_mode)
    expected = f"btrsendd: warning: {world.config}: {text}; chmod 600 {world.config}"

    for command in (["list"], ["status"], ["plan"], ["backup", "--date", "2000-01-07"]):
        proc = world.run(*command)
        warnings = [line for line in error_lines(proc) if "warning" in line]
        assert warnings == [expected], proc.stderr.decode()

    # check-config reports it once, as a finding of its own (an error where it is one).
    proc = world.run("check-config", check=False)
    [found] = [line for line in error_lines(proc) if text in line]
    assert found.endswith(f": {world.config}: {text}; chmod 600 {world.config}"), found


def test_no_warning_for_a_private_config_file(world: World) -> None:
    proc = world.run("list")

    assert error_lines(proc) == []


@pytest.mark.parametrize("how", ["owner", "group-writable", "open-parent"])
def test_a_config_file_others_can_change_is_refused(world: World, how: str) -> None:
    """Whoever can change the file can have root back up any subvolume, unencrypted, to
    where they can read it: every command refuses it (exit 2), nothing runs."""
    world.write_config()
    if how == "owner":
        os.chown(world.config, NOBODY, NOBODY)
        expected = "belongs to user nobody, who can change what btrsendd does as root"
    elif how == "group-writable":
        world.config.chmod(0o620)
        expected = "writable by its group (mode 0620), who can change what btrsendd does as root"
    else:
        world.work.chmod(0o777)
        expected = f"lies inside {world.work}, which others can write to (mode 0777)"

    for command in (["list"], ["backup", "--date", FIRST]):
        line = one_error(world.run(*command, check=False), 2)
        assert line.startswith(f"btrsendd: error: {world.config}: {expected}"), line
    assert not world.snapshots.exists()


def test_a_program_gone_before_its_check_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    # A hook's program removed between its lookup and its check: refused with the reason,
    # never an internal error (which would also reach on_failure as "a bug").
    problem = program_problem(tmp_path / "gone")
    assert problem is not None and problem.startswith("cannot be checked: ")

"""A read-only state_dir (a read-only mount) is one clear line and exit 1 from every command
that opens it, and never the advice to rebuild a catalog that is perfectly healthy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.world import BTRSENDD, World, local_world

FIRST = date(2000, 1, 1)


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> Iterator[World]:
    """A world with one backup whose state directory is then mounted read-only."""
    w = local_world(make_btrfs("src", size="300M"), tmp_path, gpg_key)
    (w.source / "file.txt").write_text("data\n")
    w.run("backup", "--date", FIRST.isoformat())
    state = str(w.work / "state")
    subprocess.run(["mount", "--bind", state, state], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", state], check=True)
        yield w
    finally:
        if subprocess.run(["umount", state], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", state], capture_output=True)
    # Nothing was lost: the catalog is as healthy as before.
    assert [b["date"] for b in w.list()] == [FIRST.isoformat()]


def args_for(command: str, world: World) -> list[str]:
    return {
        "list": ["list"],
        "status": ["status"],
        "backup": ["backup", "--date", "2000-01-07"],
        "restore": world.restore_args(FIRST, world.work / "target"),
        "verify": ["verify"],
        "catalog rebuild": ["catalog", "rebuild", "--force"],
        "run": ["run"],
    }[command]


@pytest.mark.parametrize(
    "command", ["list", "status", "backup", "restore", "verify", "catalog rebuild", "run"]
)
def test_every_command_says_so_in_one_line(world: World, command: str) -> None:
    (world.work / "target").mkdir(exist_ok=True)
    proc = subprocess.run(
        [BTRSENDD, "--config", str(world.config), *args_for(command, world)],
        capture_output=True,
        text=True,
        timeout=120,  # `run` must exit, not serve
        stdin=subprocess.DEVNULL,
    )

    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("btrsendd: ")]
    assert lines == [
        f"btrsendd: error: state_dir {world.work / 'state'} is read-only (its filesystem is "
        "mounted read-only); remount it read-write, or set state_dir to a writable directory "
        "(btrsendd records every backup there)"
    ], proc.stderr
    assert "rebuild" not in proc.stderr and "internal error" not in proc.stderr


def test_check_config_finds_it(world: World) -> None:
    proc = world.run("check-config", check=False)

    assert proc.returncode == 2
    assert (
        f"btrsendd: error: state_dir: {world.work / 'state'} is read-only (its filesystem is "
        "mounted read-only); remount it read-write, or set state_dir to a writable directory"
    ) in proc.stderr.decode().splitlines()

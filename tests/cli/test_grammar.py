"""One grammar for every command: the global options before or after it, -v and -q, and
``restore --date latest``."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

from tests.fixtures.btrfs import MakeBtrfs
from tests.support.trees import assert_same_tree
from tests.support.world import BTRSENDD, World


def btrsendd(world: World, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The real command line with exactly ``args`` (``World.run`` puts its options first)."""
    if not world.config.exists():
        world.write_config()
    return subprocess.run(
        [BTRSENDD, *args], capture_output=True, env={**os.environ, **world.env}, check=False
    )


def logged(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    """The log events (JSON lines) among what the command wrote to stderr."""
    lines = proc.stderr.decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_global_options_after_the_command(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    config = str(world.config)
    before = btrsendd(world, "--config", config, "list", "--json")
    after = btrsendd(world, "list", "--json", "--config", config, "--log-format", "json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout) != []
    rebuild = btrsendd(world, "catalog", "rebuild", "--config", config, "--force")
    assert rebuild.returncode == 0, rebuild.stderr
    assert b"1 adopted" in rebuild.stdout


def test_an_option_after_the_command_wins_and_one_not_given_there_stays(world: World) -> None:
    config = str(world.write_config())
    wins = btrsendd(world, "--config", "/nonexistent.toml", "list", "--config", config)
    assert wins.returncode == 0, wins.stderr
    stays = btrsendd(world, "--config", config, "--log-format", "json", "-v", "list")
    assert stays.returncode == 0, stays.stderr
    assert [e["event"] for e in logged(stays)] == ["config.loaded"]


def test_quiet_logs_only_warnings_and_errors_and_verbose_adds_debug(world: World) -> None:
    quiet = world.run("backup", "--date", "2000-01-01", "-q")
    assert quiet.stderr == b""
    assert b"full backup" in quiet.stdout  # what the command reports is not a log line
    verbose = world.run("-v", "plan", "--date", "2000-01-07")
    [event] = logged(verbose)
    assert (event["event"], event["level"], event["path"]) == (
        "config.loaded",
        "debug",
        str(world.config),
    )
    normal = world.run("backup", "--date", "2000-01-07")
    assert {e["level"] for e in logged(normal)} == {"info"}
    # -q still shows what goes wrong.
    (world.source / "new").write_text("x")
    late = world.run("-q", "backup", "--date", "1999-12-31", check=False)
    assert late.returncode == 1
    assert [(e["event"], e["level"]) for e in logged(late)] == [("backup.failed", "error")]


def test_restore_latest_is_the_newest_complete_backup(
    world: World, make_btrfs: MakeBtrfs, tmp_path: Path
) -> None:
    target = make_btrfs("dst") / "restore"
    target.mkdir()
    early = world.restore_args(date(2000, 1, 1), target)
    early[early.index("--date") + 1] = "latest"
    proc = world.run(*early, check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines()[-1] == (
        "btrsendd: error: data has no complete backup yet, so nothing to restore; "
        "`btrsendd list --source data` shows its backups"
    )

    world.run("backup", "--date", "2000-01-01")
    (world.source / "later.txt").write_text("day two\n")
    world.run("backup", "--date", "2000-01-07")
    args = world.restore_args(date(2000, 1, 1), target)
    args[args.index("--date") + 1] = "latest"
    out = world.run(*args).stdout.decode()
    assert "Restore data as of 2000-01-07 (the newest) into" in out
    assert_same_tree(world.snapshots / "2000-01-07", target / "2000-01-07")
    assert list(target.iterdir()) == [target / "2000-01-07"]

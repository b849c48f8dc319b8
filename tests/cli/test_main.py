"""The command line as users and scripts meet it: exit statuses, error lines, logs, pipes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from tests.cli.helpers import archive_files, one_error_line
from tests.support.world import BTRSENDD, World


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = subprocess.run(
        [BTRSENDD, "list"], capture_output=True, env={**os.environ, "BTRSENDD_CONFIG": str(missing)}
    )
    assert proc.returncode == 2
    assert f"{missing}: no such file" in one_error_line(proc.stderr)


def test_usage_errors_exit_2(world: World) -> None:
    assert world.run("plan", "--date", "2000-13-01", check=False).returncode == 2
    proc = world.run("list", "--source", "nope", check=False)
    assert proc.returncode == 2
    assert "no source named 'nope'" in one_error_line(proc.stderr)


def test_logs_are_json_events_with_fields(world: World) -> None:
    proc = world.run("backup", "--date", "2000-01-01")
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    by_name = {e["event"]: e for e in events}
    assert {"snapshot.created", "backup.planned", "backup.completed"} <= set(by_name)
    done = by_name["backup.completed"]
    assert done["source"] == "data" and done["bytes"] > 0 and "duration" in done


def test_output_to_a_reader_that_left_is_quiet(world: World) -> None:
    # `btrsendd list | head -1`: the reader is gone before btrsendd writes.  Exit as tools a
    # closed pipe stops do (128 + SIGPIPE), with no "internal error" and no traceback.
    world.run("backup", "--date", "2000-01-01")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        proc = subprocess.run(
            [BTRSENDD, "--config", str(world.config), "list", "--json"],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            env={**os.environ, **world.env},
        )
    finally:
        os.close(write_fd)
    assert proc.returncode == 141
    assert proc.stderr == b""


def test_a_failing_catalog_is_one_error_line_with_the_way_out(world: World) -> None:
    world.run("list")  # creates the catalog
    db = sqlite3.connect(world.work / "state" / "catalog.db")
    with db:  # as a full disk would fail the first write of a backup
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON backups "
            "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
    db.close()
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    assert proc.returncode == 1
    assert one_error_line(proc.stderr) == (
        "btrsendd: error: the catalog failed: database or disk is full; check free space in "
        "state_dir, or move catalog.db aside and run `btrsendd catalog rebuild`"
    )
    assert world.list() == []
    assert archive_files(world) == []

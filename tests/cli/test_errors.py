"""Every command, given bad input, says so in one line: ``btrsendd: error: ...`` with what to
do, exit 2 for a usage or configuration mistake and 1 for an operational failure, and no
traceback or second shape (argparse's usage block, ``error: ...``, ``btrsendd: ...``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest

from btrsendd.cli import build_parser
from tests.support.world import BTRSENDD, World

#: A well-formed invocation of every command, which each case below spoils in one way.
WELL_FORMED = {
    "check-config": [],
    "plan": ["--source", "data", "--date", "2000-01-01"],
    "backup": ["--source", "data", "--date", "2000-01-01", "--dry-run"],
    "backup-stdin": ["--source", "data", "--date", "2000-01-01"],
    "list": ["--source", "data"],
    "find": ["--source", "data", "*.txt"],
    "diff": ["--source", "data", "--from", "2000-01-01", "--to", "2000-01-02"],
    "restore": ["--source", "data", "--date", "2000-01-01", "--target", "/nonexistent", "--yes"],
    "forget": ["--source", "data", "--date", "2000-01-01", "--dry-run"],
    "run": [],
    "trigger": [],
    "status": [],
    "verify": ["--source", "data"],
    "catalog": ["rebuild"],
}


def the_error(world: World, *args: str, status: int = 2) -> str:
    """The one error line of ``btrsendd ARGS``, which must fail with ``status``."""
    proc = subprocess.run(
        [BTRSENDD, *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **world.env},
    )
    text = proc.stderr.decode()
    assert proc.returncode == status, f"btrsendd {' '.join(args)}:\n{text}"
    lines = text.splitlines()
    assert "Traceback" not in text and "internal error" not in text, text
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(lines) == len(logged) + 1, text
    [line] = [line for line in lines if not line.startswith("{")]
    assert line.startswith("btrsendd: error: "), text
    return line.removeprefix("btrsendd: error: ")


def test_every_command_is_in_the_table() -> None:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(WELL_FORMED)


@pytest.mark.parametrize("command", list(WELL_FORMED))
def test_bad_input_is_one_line_that_says_what_to_do(
    world: World, tmp_path: Path, command: str
) -> None:
    config = str(world.write_config())
    given = [*command.split(), *WELL_FORMED[command]]
    where = " ".join(given[:2]) if command == "catalog" else command
    json_logs = ["--log-format", "json"]

    # An option the command does not take, before or after the command.
    assert the_error(world, "--config", config, *json_logs, *given, "--bogus") == (
        f"unrecognized arguments: --bogus (see btrsendd {where} --help)"
    )
    assert the_error(world, "--bogus", *given, "--config", config) == (
        "unrecognized arguments: --bogus (see btrsendd --help)"
    )
    # A configuration file that is not there.
    missing = tmp_path / "missing.toml"
    assert the_error(world, *given, "--config", str(missing), *json_logs) == (
        f"{missing}: no such file; copy /usr/share/doc/btrsendd/btrsendd.toml.example there "
        "and edit it, or pass --config PATH (or set BTRSENDD_CONFIG)"
    )
    if "--source" in given:
        wrong = [*given]
        wrong[wrong.index("--source") + 1] = "nope"
        assert the_error(world, *wrong, "--config", config, *json_logs) == (
            "no source named 'nope' in the configuration (known: data)"
        )
    if "--date" in given:
        wrong = [*given]
        wrong[wrong.index("--date") + 1] = "2000-02-30"
        line = the_error(world, *wrong, "--config", config)
        assert line.startswith("argument --date: '2000-02-30' is not a date; write YYYY-MM-DD")
        assert line.endswith(f" (see btrsendd {where} --help)")
    # A mistake in the file, the same line from every command (and check-config).
    world.config.write_text("bogus = 1\n" + world.config.read_text())
    line = the_error(world, *given, "--config", config, *json_logs)
    assert line.startswith(f"{config}: bogus: unknown key; the keys here are state_dir, ")


def test_operational_failures_and_usage_mistakes_beyond_the_parser(world: World) -> None:
    config = str(world.write_config())
    assert the_error(world, "trigger", "--config", config, status=1) == (
        f"no daemon is running on {world.work / 'state'}; start it (systemctl start btrsendd) "
        "or back up now with `btrsendd backup --force`"
    )
    assert the_error(world, "restore", *WELL_FORMED["restore"][:2], "--date", "lates") == (
        "argument --date: 'lates' is not a date; write YYYY-MM-DD, or latest "
        "(see btrsendd restore --help)"
    )
    assert the_error(world, "forget", *WELL_FORMED["forget"], "--config", config) == (
        "data has no backup dated 2000-01-01 (the newest: none); `btrsendd list --source data` "
        "shows them all"
    )
    assert the_error(world, "lst").startswith(
        "argument COMMAND: invalid choice: 'lst' (choose from "
    )

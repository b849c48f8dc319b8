"""What every command shares: registering itself, its configuration, dates, asking, tables.

Imported at start-up by every command module, so it imports nothing of the engine at module
level: the configuration's modules (pydantic) load when a command first asks for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING

from btrsendd import units
from btrsendd.cli.grammar import COMMAND_OPTIONS
from btrsendd.errors import UsageError

if TYPE_CHECKING:
    from btrsendd.cli.grammar import Parser
    from btrsendd.config import Config

    Commands = argparse._SubParsersAction[Parser]

Handler = Callable[[argparse.Namespace], int]

#: The retrieval tiers ``--tier`` offers, as AWS names them.
TIERS = ["Bulk", "Standard", "Expedited"]


def add_command(commands: Commands, name: str, run: Handler, help: str) -> argparse.ArgumentParser:
    """The parser of command ``name``, which ``run`` carries out; ``help`` also describes it."""
    parser = commands.add_parser(name, help=help, description=help, parents=[COMMAND_OPTIONS])
    parser.set_defaults(handler=run)
    return parser


def parse_date(text: str) -> date:
    """``--date``'s type: a calendar day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD") from None


def parse_rate(text: str) -> int | None:
    """``--rate-limit``'s type: bytes per second, written as ``pipeline.rate_limit`` is
    ("20MiB/s", "40Mbit/s"); None for "unlimited"."""
    try:
        return units.parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_config_file(args: argparse.Namespace) -> None:
    """Refuse a configuration file others can change; one warning line if they can read it.

    Run before every command but check-config, which reports either as a finding of its own.
    """
    from btrsendd.config import config_path
    from btrsendd.errors import ConfigError
    from btrsendd.permissions import config_file_problem

    path = config_path(args.config)
    problem = config_file_problem(path)
    if problem is not None and problem.refuse:
        raise ConfigError(f"{path}: {problem.message}")
    if problem is not None:
        print(f"btrsendd: warning: {path}: {problem.message}", file=sys.stderr)


def load_config(args: argparse.Namespace) -> Config:
    """The configuration ``--config`` (or its defaults) names."""
    from btrsendd.config import config_path
    from btrsendd.config import load_config as load
    from btrsendd.log import get_logger

    config = load(config_path(args.config))
    # For -v: which file was read, when $BTRSENDD_CONFIG or the default chose it.
    get_logger().debug(
        "config.loaded", path=str(config.source_file), sources=[s.name for s in config.sources]
    )
    return config


def confirm(question: str) -> bool:
    """Ask on the terminal; without one, refuse (exit 2) rather than guess."""
    if not sys.stdin.isatty():
        raise UsageError("not asking for confirmation without a terminal: pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns as wide as their widest cell, two spaces apart, no trailing blanks."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

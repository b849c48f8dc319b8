"""What every btrsendd command line shares: the options that stand before or after the
command, and how a mistake on the command line is worded.

The global options (``--config``, ``--log-format``, ``-v``, ``-q``) are defined once and
given to the top parser and, as a parent, to every command's parser, so ``btrsendd list
--config F`` works as ``btrsendd --config F list`` does, as in restic or zrepl.  The copies
default to ``SUPPRESS``: argparse copies every attribute a command's parser sets over the
top parser's, so a copy with a default would undo an option given before the command.

A usage error is one line, ``btrsendd: error: WHAT (see btrsendd COMMAND --help)``, exit 2,
like every other error: argparse's usage block and ``PROG: error:`` shape would be a second
and third way to say it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

#: Exit status of a usage error, as for every ``UsageError``.
USAGE_STATUS = 2


class Parser(argparse.ArgumentParser):
    """argparse with btrsendd's error line; command parsers (``add_subparsers`` makes them of
    the same class) name their own ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_STATUS, f"btrsendd: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A command's parser is the last to see its arguments (argparse hands what it does
        # not know up to the top parser, whose error would point at `btrsendd --help`): it
        # refuses them itself, naming the help that lists what it does take.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def global_options(*, top: bool) -> Parser:
    """The options accepted before or after the command: with their defaults for the top
    parser (``top``), without for the copies each command's parser inherits, so that an
    option given after the command wins and one not given there leaves the top's value."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser = Parser(add_help=False)
    options = parser.add_argument_group("global options (before or after the command)")
    options.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help="configuration file (default: $BTRSENDD_CONFIG or /etc/btrsendd/btrsendd.toml)",
    )
    options.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        default=default("auto"),
        help="log lines on stderr: readable on a terminal, JSON otherwise (default: auto)",
    )
    # Not a mutually exclusive group: argparse would move it out of this group in every copy.
    # Of -v and -q, the one given last wins, as do the other options given twice.
    options.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const="debug",
        default=default("info"),
        help="log debug events too",
    )
    options.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const="warning",
        default=default("info"),
        help="log only warnings and errors",
    )
    return parser


#: The copy of the global options every command's parser takes as a parent.
COMMAND_OPTIONS = global_options(top=False)

"""Command line: the parser, and the one place where failures become messages and statuses
(but for ``backup``, which words one source's failure itself while the others go on).

Each command is a module of this package holding its arguments and its ``run``; what it
prints is either for people (tables, one-line summaries) or, with ``--json``, a format scripts
rely on (keys are added, never renamed or removed).  The engine returns data; the words are
chosen here.  Every ``BtrsenddError`` becomes one line on stderr and its exit status (2
usage/config, 1 operational), here in ``main``; a traceback means a bug and is shown only with
``BTRSENDD_DEBUG=1``.

Every command module is imported at start-up to build the parser, so none of them imports the
engine at module level: each ``run`` imports what it needs when it runs, and so pays only for
the modules it uses: ``--help`` for none of the engines, ``backup`` not for the restore
engine or the pre-flight checks, ``list`` not for APScheduler.  Start-up is a large part of a
small incremental backup's time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from btrsendd import __version__, interrupt
from btrsendd.cli import (
    backup,
    backup_stdin,
    catalog,
    check_config,
    diff,
    find,
    forget,
    list_backups,
    plan,
    restore,
    run,
    status,
    trigger,
    verify,
)
from btrsendd.cli.common import check_config_file
from btrsendd.cli.grammar import Parser, global_options
from btrsendd.errors import BtrsenddError
from btrsendd.interrupt import Interrupted

#: Each command adds its parser, in the order ``--help`` lists them.
COMMANDS = (
    check_config.register,
    plan.register,
    backup.register,
    backup_stdin.register,
    list_backups.register,
    find.register,
    diff.register,
    restore.register,
    forget.register,
    run.register,
    trigger.register,
    status.register,
    verify.register,
    catalog.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; building it has no side effects (the man pages read it)."""
    parser = Parser(
        prog="btrsendd",
        description=(
            "Incremental, encrypted backups of btrfs subvolumes to AWS cold storage. "
            "Snapshots on a schedule, uploads full and incremental `btrfs send` streams "
            "(compressed, gpg-encrypted), and restores any backed-up day."
        ),
        epilog="Exit status: 0 success, 1 operational failure, 2 usage or configuration error, "
        "130 or 143 interrupted by SIGINT or SIGTERM (it says what it left and what the next "
        "run does).",
        parents=[global_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"btrsendd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(commands)
    return parser


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (and not, say, a pipe
    to gpg that broke inside the pipeline, which is an error to report)."""
    import select

    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":  # the daemon handles its own signals
        interrupt.install()
    from btrsendd.log import configure as configure_logging

    configure_logging(args.log_format, args.log_level)
    try:
        if args.command != "check-config":  # which reports it as a finding of its own
            check_config_file(args)
        return int(args.handler(args))
    except Interrupted as exc:
        what = "; ".join(exc.aftermath) or "nothing was left half done"
        print(f"btrsendd: error: {args.command} interrupted by {exc}: {what}", file=sys.stderr)
        return exc.exit_status
    except BtrsenddError as exc:
        for line in str(exc).splitlines() or ["failed"]:
            print(f"btrsendd: error: {line}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        # Before the stop signals are ours (parsing, imports): nothing was started yet.
        print("btrsendd: error: interrupted (SIGINT) before anything was done", file=sys.stderr)
        return 130
    except Exception as exc:
        # Only the catalog speaks sqlite, and imports it: an error of sqlite3 needs it loaded,
        # so start-up need not load it just to name the error class.
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is not None and isinstance(exc, sqlite3.Error):
            # A failure there is the state directory's disk or file.
            print(
                f"btrsendd: error: the catalog failed: {exc}; check free space in state_dir, or "
                "move catalog.db aside and run `btrsendd catalog rebuild`",
                file=sys.stderr,
            )
            return 1
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            # `btrsendd list | head`: the reader has all it wanted.  Quiet, like any tool a
            # closed pipe stops, and nothing more to flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        # A bug: say so plainly, keep the traceback for debugging.
        if os.environ.get("BTRSENDD_DEBUG"):
            import traceback

            traceback.print_exc()
        print(
            f"btrsendd: error: internal error: {type(exc).__name__}: {exc} (a bug: please "
            "report it; set BTRSENDD_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1

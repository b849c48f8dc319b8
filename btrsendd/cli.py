"""Command line: argument parsing and output, nothing else.

Each command loads the configuration, builds an ``Engine`` and calls into ``backup.py`` (or
``restore.py``); what it prints is either for people (tables, one-line summaries) or, with
``--json``, a stable format for scripts (DESIGN.md section 7).  Every ``BtrsenddError`` becomes
one line on stderr and its exit status (2 usage/config, 1 operational); a traceback means a
bug and is shown only with ``BTRSENDD_DEBUG=1``.

Each command imports what it needs when it runs, not at start-up, so that it pays only for
the modules it uses: ``--help`` for none of the engines, ``backup`` not for the restore engine
or the pre-flight checks.  Start-up is a large part of a small incremental backup's time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import select
import signal
import sqlite3
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from btrsendd import __version__, interrupt
from btrsendd.errors import BtrsenddError, UsageError
from btrsendd.interrupt import Interrupted
from btrsendd.progress import human_bytes

if TYPE_CHECKING:
    from btrsendd.backup import Outcome
    from btrsendd.config import Config
    from btrsendd.model import Backup
    from btrsendd.planner import Plan

Handler = Callable[[argparse.Namespace], int]


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD") from None


def _config(args: argparse.Namespace) -> Config:
    from btrsendd.config import config_path, load_config

    return load_config(config_path(args.config))


def _lazy(target: str) -> Handler:
    """A handler in another module, imported only when its command runs.

    Keeps start-up of quick commands (``list``, ``plan``) free of what only the daemon and the
    maintenance commands need (APScheduler, for one).
    """

    def handler(args: argparse.Namespace) -> int:
        module, _, name = target.partition(":")
        return int(getattr(importlib.import_module(module), name)(args))

    return handler


# -- commands ------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    from btrsendd import preflight
    from btrsendd.storage import open_storage
    from btrsendd.storage.base import AccessCheck

    config = _config(args)
    storage = open_storage(config.storage, config.pipeline, config.state_dir)
    check_access = storage.check_access if isinstance(storage, AccessCheck) else None
    findings = preflight.check(config, check_storage=check_access)
    for line in preflight.format_findings(findings):
        print(line, file=sys.stderr)
    if any(f.level == "error" for f in findings):
        return 2
    names = ", ".join(s.name for s in config.sources)
    print(
        f"{config.source_file}: OK ({len(config.sources)} source(s): {names}; "
        f"storage: {storage.description})"
    )
    return 0


def _plan_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "source": outcome.source,
        "date": outcome.date.isoformat(),
        "action": outcome.action,
        "parent": None if outcome.parent_date is None else outcome.parent_date.isoformat(),
        "expire": [d.isoformat() for d in outcome.expired],
    }


def _describe(o: Outcome) -> str:
    what = {"none": "no backup due", "full": "full backup"}.get(o.action, "incremental")
    if o.action == "incremental" and o.parent_date:
        what += f" from {o.parent_date}"
    line = f"{o.source} {o.date}: {what} ({o.reason})"
    if o.backup_id:
        line += (
            f"; {o.backup_id}: {human_bytes(o.raw_bytes)} sent, "
            f"{human_bytes(o.stored_bytes)} stored in {o.volumes} volume(s)"
        )
    if o.expired:
        line += f"; expired chain of {len(o.expired)} backup(s) ({o.expired[0]} .. {o.expired[-1]})"
    return line


def cmd_plan(args: argparse.Namespace) -> int:
    from btrsendd.backup import planned
    from btrsendd.repository import open_repository

    config = _config(args)
    day = args.date or date.today()
    with open_repository(config) as repo:
        outcomes = [planned(repo, src.name, day) for src in config.selected_sources(args.source)]
    if args.json:
        print(json.dumps([_plan_json(o) for o in outcomes], indent=2))
    else:
        for o in outcomes:
            print(_describe(o))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from btrsendd.backup import BackupCycle
    from btrsendd.log import get_logger
    from btrsendd.repository import open_repository

    config = _config(args)
    day = args.date or date.today()
    if args.dry_run:
        args.json = False
        return cmd_plan(args)
    status = 0
    with open_repository(config, lock="backup") as repo:
        cycle = BackupCycle(repo)
        for src in config.selected_sources(args.source):
            try:
                print(_describe(cycle.run(src, day, force=args.force)))
            except BtrsenddError as exc:
                # One source failing must not stop the others; the exit status still says so.
                get_logger(source=src.name).error("backup.failed", reason=str(exc))
                print(f"btrsendd: error: {src.name}: {exc}", file=sys.stderr)
                status = max(status, exc.exit_status)
    return status


def cmd_backup_stdin(args: argparse.Namespace) -> int:
    from btrsendd.backup import BackupCycle
    from btrsendd.repository import open_repository

    config = _config(args)
    src = config.source(args.source)

    def announce(decision: Plan) -> None:
        # btrsend's protocol: say which stream is expected, then read it from stdin.
        print("c" if decision.parent is None else f"i {decision.parent.date}", flush=True)

    with open_repository(config, lock="backup-stdin") as repo:
        BackupCycle(repo).run_stdin(src.name, args.date, announce, sys.stdin.buffer)
    return 0


def _list_json(row: Backup) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "date": row.date.isoformat(),
        "kind": row.kind,
        "parent": None if row.parent_date is None else row.parent_date.isoformat(),
        "parent_id": row.parent_id,
        "chain": row.chain,
        "raw_bytes": row.raw_bytes,
        "stored_bytes": row.stored_bytes,
        "volumes": row.volume_count,
        "state": row.state,
        "storage_class": row.storage_class,
        "compression": row.compression,
        "encrypted": bool(row.recipients),
        "snapshot": row.snapshot,
        "completed_at": row.completed_at,
    }


def cmd_list(args: argparse.Namespace) -> int:
    from btrsendd.repository import open_repository

    config = _config(args)
    if args.source is not None:
        config.source(args.source)  # an unknown name is a usage error, not an empty list
    with open_repository(config) as repo:
        rows = repo.catalog.backups(args.source, states=("complete", "uploading", "expiring"))
    if args.json:
        print(json.dumps([_list_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no backups yet")
        return 0
    header = ("SOURCE", "DATE", "KIND", "PARENT", "STATE", "RAW", "STORED", "VOLS", "ID")
    table = [header] + [
        (
            r.source,
            str(r.date),
            r.kind,
            str(r.parent_date or "-"),
            r.state,
            human_bytes(r.raw_bytes),
            human_bytes(r.stored_bytes),
            str(r.volume_count),
            r.id,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from btrsendd import pricing, restore
    from btrsendd.receive import Writable
    from btrsendd.repository import open_repository
    from btrsendd.workdir import Target

    config = _config(args)
    config.source(args.source)
    prices = pricing.Prices.from_config(config.restore)
    with open_repository(config) as repo, contextlib.ExitStack() as opened:
        chain = restore.resolve_chain(repo.catalog, args.source, args.date)
        wanted = chain[-1]
        # Opened now and kept: the directories checked are the ones written to, hours later.
        target = opened.enter_context(Target.open(args.target))
        writable = None
        if args.writable is not None:
            parent = Target.open(args.writable.parent, "--writable's directory")
            writable = Writable(opened.enter_context(parent), args.writable.name)
        restore.check_target(
            target, wanted.snapshot, writable, [s.snapshot_dir for s in config.sources]
        )
        job = restore.RestoreJob.prepare(repo, chain, args.gnupg_home)
        print(
            f"Restore {args.source} as of {wanted.date} (newest backup on or before "
            f"{args.date}) into {args.target}:"
        )
        for line in job.plan(prices, args.tier):
            print(line)
        if not args.yes and not confirm("Proceed?"):
            print("nothing requested")
            return 1
        waiting = job.survey.waiting
        if waiting and args.no_wait:
            job.thaw(args.tier, wait=False)
            print(
                f"{len(waiting)} object(s) are being restored from cold storage; run the same "
                "command again later to download them (nothing will be requested twice)"
            )
            return 0
        if waiting:
            print(
                f"waiting for {len(waiting)} object(s) to be restored from cold storage; "
                "interrupting is safe: the same command later keeps waiting, without new requests",
                flush=True,
            )
            try:
                job.thaw(args.tier, wait=True)
            except Interrupted as exc:
                exc.tell(
                    "the retrievals requested so far go on and are recorded: run the same "
                    "command again later, nothing is requested twice"
                )
                raise
        path = job.receive(target, args.gnupg_home, writable)
    print(f"restored {args.source} {wanted.date} to {path}")
    if args.writable:
        print(f"writable snapshot at {args.writable}")
    return 0


def confirm(question: str) -> bool:
    """Ask on the terminal; without one, refuse (exit 2) rather than guess."""
    if not sys.stdin.isatty():
        raise UsageError("not asking for confirmation without a terminal: pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btrsendd",
        description=(
            "Incremental, encrypted backups of btrfs subvolumes to AWS cold storage. "
            "Snapshots on a schedule, uploads full and incremental `btrfs send` streams "
            "(compressed, gpg-encrypted), and restores any backed-up day."
        ),
        epilog="Exit status: 0 success, 1 operational failure, 2 usage or configuration error, "
        "130 or 143 interrupted by SIGINT or SIGTERM (it says what it left and what the next "
        "run does).",
    )
    parser.add_argument("--version", action="version", version=f"btrsendd {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $BTRSENDD_CONFIG or /etc/btrsendd/btrsendd.toml)",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        default="auto",
        help="log lines on stderr: readable on a terminal, JSON otherwise (default: auto)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    command(
        "check-config",
        cmd_check_config,
        "validate the configuration and the machine: sources, keys, storage access",
    )

    p = command(
        "plan", cmd_plan, "show what a backup run would do today (or on --date); changes nothing"
    )
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument("--date", type=_date, metavar="YYYY-MM-DD", help="decide for this date")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per source")

    p = command(
        "backup",
        cmd_backup,
        "snapshot each source, then upload a full or incremental backup when one is due",
    )
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument(
        "--date",
        type=_date,
        metavar="YYYY-MM-DD",
        help="the backup's date and the snapshot's name (default: today; at most tomorrow)",
    )
    p.add_argument(
        "--force", action="store_true", help="back up even if the schedule says no backup is due"
    )
    p.add_argument("--dry-run", action="store_true", help="only show the plan, like `plan`")

    p = command(
        "backup-stdin",
        cmd_backup_stdin,
        "btrsend's protocol: print nothing, 'c' or 'i YYYY-MM-DD', then store the send "
        "stream read from stdin",
    )
    p.add_argument("--source", metavar="NAME", required=True, help="the source to back up")
    p.add_argument(
        "--date",
        type=_date,
        metavar="YYYY-MM-DD",
        required=True,
        help="its date (at most tomorrow)",
    )

    p = command("list", cmd_list, "list backups from the catalog")
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per backup")
    p = command(
        "restore",
        cmd_restore,
        "restore the newest backup dated on or before --date into --target (a btrfs directory)",
    )
    p.add_argument("--source", metavar="NAME", required=True, help="the source to restore")
    p.add_argument("--date", type=_date, metavar="YYYY-MM-DD", required=True, help="the day")
    p.add_argument(
        "--target",
        type=Path,
        metavar="DIR",
        required=True,
        help="an existing directory on a btrfs filesystem",
    )
    p.add_argument(
        "--tier",
        choices=["Bulk", "Standard", "Expedited"],
        default="Standard",
        help="retrieval tier for archived objects (default: Standard)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before requesting retrievals")
    p.add_argument(
        "--gnupg-home",
        type=Path,
        metavar="DIR",
        help="keyring holding the private key (default: gpg's own default)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="request retrievals and exit; run again later to download",
    )
    p.add_argument(
        "--writable",
        type=Path,
        metavar="PATH",
        help="also make a writable snapshot of the restored day at PATH",
    )
    p = command(
        "forget",
        _lazy("btrsendd.forget:cmd_forget"),
        "delete a backup made by mistake (a wrong --date, a clock that jumped ahead) and every "
        "later backup of its chain, from storage and the catalog; shows what goes and what "
        "early deletion costs first",
    )
    p.add_argument("--source", metavar="NAME", required=True, help="the backup's source")
    p.add_argument(
        "--date", type=_date, metavar="YYYY-MM-DD", required=True, help="the backup's date"
    )
    p.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    p.add_argument("--yes", action="store_true", help="do not ask before deleting")
    command(
        "run",
        _lazy("btrsendd.daemon:cmd_run"),
        "run the daemon in the foreground (systemd: Type=notify); backs up on schedule.cron",
    )
    command(
        "trigger",
        _lazy("btrsendd.daemon:cmd_trigger"),
        "ask the running daemon for a backup cycle now (sends it SIGUSR1)",
    )
    p = command(
        "status",
        _lazy("btrsendd.status:cmd_status"),
        "per source: last and next backup, chain, stored bytes, a running upload, last error",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = command(
        "verify",
        _lazy("btrsendd.verify:cmd_verify"),
        "check that every volume and manifest is stored as recorded, without retrieval cost "
        "(sizes and S3's checksums by HEAD on S3, sizes and SHA-256 on the local backend, "
        "sizes on vaults), and list orphans",
    )
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument(
        "--deep",
        action="store_true",
        help="also restore the newest backup of each source into a scratch btrfs and compare "
        "(costs retrievals)",
    )
    p.add_argument(
        "--clean",
        action="store_true",
        help="delete orphans (objects no manifest references) and abort unfinished multipart "
        "uploads",
    )
    p.add_argument(
        "--gnupg-home",
        type=Path,
        metavar="DIR",
        help="--deep: keyring holding the private key (default: gpg's own default)",
    )
    p = command("catalog", _lazy("btrsendd.rebuild:cmd_catalog"), "catalog maintenance")
    catalog_sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    p = catalog_sub.add_parser(
        "rebuild",
        help="recreate the catalog from the manifests in the bucket (for a new machine)",
        description="recreate the catalog from the manifests in the bucket (for a new machine)",
    )
    p.add_argument("--force", action="store_true", help="replace a catalog that is not empty")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="glacier-vault: start the inventory and manifest retrieval jobs and exit; run "
        "again later",
    )
    p.add_argument(
        "--tier",
        choices=["Bulk", "Standard", "Expedited"],
        default="Standard",
        help="glacier-vault: retrieval tier for the manifests (default: Standard)",
    )
    return parser


def _check_config_file(args: argparse.Namespace) -> None:
    """Refuse a configuration file others can change; one warning line if they can read it.

    Every command but check-config, which reports either as a finding of its own.
    """
    from btrsendd.config import config_path
    from btrsendd.errors import ConfigError
    from btrsendd.permissions import config_file_problem

    path = config_path(args.config)
    problem = None if args.command == "check-config" else config_file_problem(path)
    if problem is not None and problem.refuse:
        raise ConfigError(f"{path}: {problem.message}")
    if problem is not None:
        print(f"btrsendd: warning: {path}: {problem.message}", file=sys.stderr)


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (and not, say, a pipe
    to gpg that broke inside the pipeline, which is an error to report)."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":  # the daemon handles its own signals
        interrupt.install()
    from btrsendd.log import configure as configure_logging

    configure_logging(args.log_format)
    try:
        _check_config_file(args)
        return int(args.handler(args))
    except Interrupted as exc:
        what = "; ".join(exc.aftermath) or "nothing was left half done"
        print(f"btrsendd: error: {args.command} interrupted by {exc}: {what}", file=sys.stderr)
        return exc.exit_status
    except BtrsenddError as exc:
        for line in str(exc).splitlines() or ["failed"]:
            print(f"btrsendd: error: {line}", file=sys.stderr)
        return exc.exit_status
    except sqlite3.Error as exc:
        # Only the catalog speaks sqlite; a failure there is the state directory's disk or file.
        print(
            f"btrsendd: error: the catalog failed: {exc}; check free space in state_dir, or "
            "move catalog.db aside and run `btrsendd catalog rebuild`",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("btrsendd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so plainly, keep the traceback for debugging
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            # `btrsendd list | head`: the reader has all it wanted.  Quiet, like any tool a
            # closed pipe stops, and nothing more to flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        if os.environ.get("BTRSENDD_DEBUG"):
            traceback.print_exc()
        print(
            f"btrsendd: internal error: {type(exc).__name__}: {exc} "
            "(set BTRSENDD_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1

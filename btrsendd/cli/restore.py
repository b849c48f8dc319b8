"""``btrsendd restore``: a backed-up day back into a btrfs directory.

What it will cost and how long it waits is shown first (``plan_lines``, which ``verify
--deep`` shows too); retrievals are requested only once the user says so (or ``--yes``).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from btrsendd.cli.common import TIERS, add_command, confirm, load_config, parse_date, parse_rate
from btrsendd.errors import UsageError
from btrsendd.interrupt import Interrupted
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.catalog import Catalog
    from btrsendd.cli.common import Commands
    from btrsendd.restore import RestoreJob
    from btrsendd.restore_plan import RestorePlan


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "restore",
        run,
        "restore the newest backup dated on or before --date into --target (a btrfs "
        "directory), or only its --path(s) onto any filesystem",
    )
    p.add_argument("--source", metavar="NAME", required=True, help="the source to restore")
    p.add_argument(
        "--date",
        type=_day_or_latest,
        metavar="YYYY-MM-DD|latest",
        required=True,
        help="the day, or latest: the newest complete backup",
    )
    p.add_argument(
        "--target",
        type=Path,
        metavar="DIR",
        required=True,
        help="an existing directory on a btrfs filesystem (with --path: on any filesystem)",
    )
    p.add_argument(
        "--path",
        action="append",
        dest="paths",
        metavar="PATH",
        help="restore only PATH (a file or a directory tree, relative to the source; "
        "repeatable; / is the whole tree), from the volumes that hold it, onto any filesystem",
    )
    p.add_argument(
        "--tier",
        choices=TIERS,
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
    p.add_argument(
        "--rate-limit",
        type=parse_rate,
        metavar="RATE",
        help='bytes per second read from storage, e.g. "20MiB/s" or "40Mbit/s" '
        "(default: unlimited)",
    )


def _day_or_latest(text: str) -> date | None:
    """``--date``'s type: a day, or None for ``latest``."""
    if text == "latest":
        return None
    try:
        return parse_date(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; write YYYY-MM-DD, or latest"
        ) from None


def _newest(catalog: Catalog, source: str) -> date:
    """The day of ``source``'s newest complete backup: what ``--date latest`` restores."""
    complete = catalog.backups(source)
    if not complete:
        raise UsageError(
            f"{source} has no complete backup yet, so nothing to restore; `btrsendd list "
            f"--source {source}` shows its backups"
        )
    return complete[-1].date


def plan_lines(
    plan: RestorePlan,
    *,
    members: list[str] | None = None,
    whole: Mapping[str, float] | None = None,
) -> list[str]:
    """The chain, where its objects stand, and what going on costs at each tier.

    ``restore --path`` (``cli/restore_paths.py``) words the chain's rows itself
    (``members``) and adds what a whole-chain restore would cost at each tier (``whole``).
    """
    lines = members or [
        f"  {r.date}  {r.kind:<11}  {human_bytes(r.stored_bytes):>10}  "
        f"{r.volume_count:>3} volume(s)  {r.storage_class}  {r.id}"
        for r in plan.chain
    ]
    state = [f"{plan.readable} readable now"]
    if plan.pending:
        requested = sorted(
            {f"{r.tier} at {r.requested_at:%Y-%m-%d %H:%M} UTC" for r in plan.requests}
        )
        state.append(
            f"{plan.pending} being restored"
            + (f" (requested {', '.join(requested)})" if requested else "")
        )
    if plan.to_request:
        state.append(f"{plan.to_request} to request")
    lines.append(
        f"  {plan.objects} object(s), {human_bytes(plan.stored_bytes)} stored: {', '.join(state)}"
    )

    def beside(tier: str) -> str:
        cost = (whole or {}).get(tier)
        return "" if cost is None else f"  (whole chain: ${cost:.2f})"

    if not plan.to_request:
        if plan.download_cost or any((whole or {}).values()):
            lines.append(
                f"  estimated cost (download): ${plan.download_cost:.2f}{beside(plan.tier)}"
            )
        return lines
    lines.append(f"  {'tier':<10} {'wait':<18} estimated cost")
    for option in plan.options:
        mark = "  <- --tier" if option.tier == plan.tier else ""
        lines.append(
            f"  {option.tier:<10} {', '.join(option.waits):<18} ${option.cost:.2f}"
            f"{beside(option.tier)}{mark}"
        )
    lines.append(
        f"  Thawed copies stay readable for {plan.thawed_days} days.  Estimates from AWS list "
        "prices (us-east-1) or [restore] in the configuration."
    )
    return lines


def run(args: argparse.Namespace) -> int:
    from btrsendd import pricing
    from btrsendd import restore as engine
    from btrsendd.receive import Writable
    from btrsendd.repository import open_repository
    from btrsendd.workdir import Target

    config = load_config(args)
    config.source(args.source)
    if args.paths is not None:
        from btrsendd.cli.restore_paths import run_paths

        return run_paths(args, config)
    prices = pricing.Prices.from_config(config.restore)
    with open_repository(config) as repo, contextlib.ExitStack() as opened:
        day = _newest(repo.catalog, args.source) if args.date is None else args.date
        chain = engine.resolve_chain(repo.catalog, args.source, day)
        wanted = chain[-1]
        # Opened now and kept: the directories checked are the ones written to, hours later.
        target = opened.enter_context(Target.open(args.target))
        writable = None
        if args.writable is not None:
            parent = Target.open(args.writable.parent, "--writable's directory")
            writable = Writable(opened.enter_context(parent), args.writable.name)
        engine.check_target(
            target, wanted.snapshot, writable, [s.snapshot_dir for s in config.sources]
        )
        job = engine.RestoreJob.prepare(repo, chain, args.gnupg_home)
        which = "the newest" if args.date is None else f"newest backup on or before {day}"
        print(f"Restore {args.source} as of {wanted.date} ({which}) into {args.target}:")
        for line in plan_lines(job.plan(prices, args.tier)):
            print(line)
        stop = proceed(args, job)
        if stop is not None:
            return stop
        path = job.receive(target, args.gnupg_home, writable, rate_limit=args.rate_limit)
    print(f"restored {args.source} {wanted.date} to {path}")
    if args.writable:
        print(f"writable snapshot at {args.writable}")
    return 0


def proceed(args: argparse.Namespace, job: RestoreJob) -> int | None:
    """Ask (unless ``--yes``), then request and wait for what is archived (``--no-wait``:
    only request); None to go on and download, else the exit status to stop with."""
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
    return None

"""``btrsendd restore --path``: some paths of a day into a directory on any filesystem.

The same command as a whole restore (``cli/restore.py``), the same plan, confirmation and
waiting; what differs is what is read (the volumes holding the paths, found from the file
indexes: ``fileindex/restore_paths.py``) and where it goes: ``TARGET/<day>/PATH``, recreated
file by file rather than received, so the target needs no btrfs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from btrsendd.cli.restore import plan_lines, proceed
from btrsendd.errors import UsageError
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.config import Config
    from btrsendd.fileindex.restore_paths import PathPlan


def path_plan_lines(plan: PathPlan) -> list[str]:
    """Per backup of the chain, the volumes read of all; their state and cost, beside the
    whole chain's."""
    selected = plan.selected
    members = []
    for r in selected.chain:
        count, size = plan.reads[r.id]
        members.append(
            f"  {r.date}  {r.kind:<11}  {count:>3} of {r.volume_count:>3} volume(s)  "
            f"{human_bytes(size):>10} of {human_bytes(r.stored_bytes):>10}  "
            f"{r.storage_class}  {r.id}"
        )
    return [
        *plan_lines(selected, members=members, whole=plan.chain_costs),
        f"  A whole-chain restore would read {plan.chain_objects} object(s), "
        f"{human_bytes(plan.chain_stored_bytes)} stored.",
    ]


def run_paths(args: argparse.Namespace, config: Config) -> int:
    from btrsendd import pricing
    from btrsendd import restore as engine
    from btrsendd.cli.restore import _newest
    from btrsendd.fileindex.restore_paths import PathRestore, wanted_path
    from btrsendd.repository import open_repository
    from btrsendd.storage.throttle import Throttle

    if args.writable is not None:
        raise UsageError("--writable makes a btrfs snapshot, which --path does not restore")
    paths = list(dict.fromkeys(wanted_path(p) for p in args.paths))
    prices = pricing.Prices.from_config(config.restore)
    with open_repository(config) as repo:
        day = _newest(repo.catalog, args.source) if args.date is None else args.date
        chain = engine.resolve_chain(repo.catalog, args.source, day)
        wanted = chain[-1]
        name = wanted.snapshot or wanted.date.isoformat()
        # Opened now and kept: the directory checked is the one written to, hours later.
        try:
            target = os.open(args.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(
                f"restore target {args.target} is not a directory ({exc.strerror}); create it first"
            ) from None
        try:
            try:
                os.stat(name, dir_fd=target, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                raise UsageError(
                    f"{args.target} already contains {name}; delete it or choose another --target"
                )
            restore = PathRestore.prepare(repo, chain, paths, args.gnupg_home)
            which = "the newest" if args.date is None else f"newest backup on or before {day}"
            shown = ", ".join("/" + p for p in paths)
            print(
                f"Restore {shown} of {args.source} as of {wanted.date} ({which}) into "
                f"{args.target / name}:"
            )
            for line in path_plan_lines(restore.plan(prices, args.tier)):
                print(line)
            stop = proceed(args, restore.job)
            if stop is not None:
                return stop
            refused = restore.extract(
                target, args.target, name, args.gnupg_home, Throttle(args.rate_limit)
            )
        finally:
            os.close(target)
    for line in refused.lines():
        print(f"btrsendd: warning: {line}", file=sys.stderr)
    print(
        f"restored {len(restore.entries)} entr{'y' if len(restore.entries) == 1 else 'ies'} "
        f"of {args.source} {wanted.date} to {args.target / name}"
    )
    return 0

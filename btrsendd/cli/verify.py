"""``btrsendd verify``: the checks of ``btrsendd/verify.py``, one line per finding.

Exit 1 if anything is wrong: a problem, or an orphan (which ``--clean`` deletes); with
``--json`` too, whose object says the same for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, load_config, parse_rate
from btrsendd.cli.restore import plan_lines
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.restore_plan import RestorePlan
    from btrsendd.verify import Cleaned, Report


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "verify",
        run,
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
    p.add_argument(
        "--rate-limit",
        type=parse_rate,
        metavar="RATE",
        help='--deep: bytes per second read from storage, e.g. "20MiB/s" (default: unlimited)',
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: what was found per source, and a summary",
    )


def _warn_deep(plan: RestorePlan) -> None:
    """Before ``--deep`` spends anything: what it restores, and what that costs."""
    newest = plan.chain[-1]
    print(
        f"btrsendd: warning: verify --deep restores {newest.source} {newest.date}, which can "
        f"cost money and take hours (tier {plan.tier}):",
        file=sys.stderr,
    )
    for line in plan_lines(plan):
        print(line, file=sys.stderr)


def _cleaned(done: Cleaned) -> list[str]:
    lines = []
    if done.deleted:
        lines.append(f"deleted {done.deleted} orphan(s)")
    if done.left:
        lines.append(
            f"left {done.left} orphan(s) whose keys btrsendd never writes; delete them with "
            "your storage's own tools"
        )
    if done.aborted:
        lines.append(f"removed {done.aborted} unfinished upload(s)")
    if done.versions_deleted:
        lines.append(f"deleted {done.versions_deleted} version(s) no backup owns")
    if done.versions_locked:
        lines.append(
            f"left {done.versions_locked} version(s) no backup owns that are still locked "
            "(Object Lock); `verify --clean` deletes them once their retention ends"
        )
    return lines


def _print_report(r: Report) -> None:
    from btrsendd.manifest import shown

    for line in r.notes:
        print(f"{r.source}: {line}")
    for line in r.problems:
        print(f"{r.source}: PROBLEM: {line}")
    for o in r.orphans:
        print(f"{r.source}: ORPHAN: {shown(o.key)} ({human_bytes(o.size)})")
    for key in r.uploads:
        print(f"{r.source}: ORPHAN: {shown(key)} (unfinished upload)")
    for v in r.versions:
        what = "delete marker" if v.delete_marker else human_bytes(v.size)
        print(f"{r.source}: ORPHAN: {shown(v.key)} version {shown(v.version)} ({what})")


def report_json(r: Report) -> dict[str, Any]:
    """One source's findings for scripts: the same as the lines, with sizes in bytes."""
    return {
        "source": r.source,
        "problems": r.problems,
        "orphans": [
            {"key": o.key, "size": o.size, "storage_class": o.storage_class} for o in r.orphans
        ],
        "uploads": r.uploads,
        "versions": [
            {"key": v.key, "version": v.version, "size": v.size, "delete_marker": v.delete_marker}
            for v in r.versions
        ],
        "notes": r.notes,
    }


def run(args: argparse.Namespace) -> int:
    """Print every problem and orphan, one per line; exit 1 if anything is wrong."""
    from btrsendd.lock import backup_running
    from btrsendd.pricing import Prices
    from btrsendd.repository import open_repository
    from btrsendd.verify import check_source, clean
    from btrsendd.verify_deep import deep_check

    config = load_config(args)
    sources = config.selected_sources(args.source)
    # --clean deletes: it holds the state lock, so no backup is writing meanwhile.
    with open_repository(config, lock="verify --clean" if args.clean else None) as repo:
        rehash = repo.storage.free_check == "rehash"
        idle = args.clean or not backup_running(config.state_dir)
        reports = [check_source(repo, src.name, rehash=rehash, idle=idle) for src in sources]
        if args.clean:
            for report in reports:
                report.notes += _cleaned(clean(repo, report))
    if args.deep:
        # Outside the lock: waiting for thaws can take days, and backups must go on.
        prices = Prices.from_config(config.restore)
        with open_repository(config) as repo:
            for src, report in zip(sources, reports, strict=True):
                deep_check(repo, src, prices, report, args.gnupg_home, _warn_deep, args.rate_limit)
    problems = sum(len(r.problems) for r in reports)
    orphans = sum(r.orphan_count for r in reports)
    ok = not problems and not orphans
    if args.json:
        summary = {"problems": problems, "orphans": orphans, "ok": ok}
        print(
            json.dumps({"sources": [report_json(r) for r in reports], "summary": summary}, indent=2)
        )
        return 0 if ok else 1
    for r in reports:
        _print_report(r)
    if ok:
        print("verify: OK")
        return 0
    print(
        f"verify: {problems} problem(s), {orphans} orphan(s)"
        + ("; `btrsendd verify --clean` deletes the orphans" if orphans else "")
    )
    return 1

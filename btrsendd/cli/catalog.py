"""``btrsendd catalog rebuild``: the catalog recreated from the manifests in storage."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import TYPE_CHECKING

from btrsendd.cli.common import TIERS, add_command, load_config
from btrsendd.cli.grammar import COMMAND_OPTIONS

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.manifest import Manifest


def register(commands: Commands) -> None:
    p = add_command(commands, "catalog", run, "catalog maintenance")
    actions = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "rebuild",
        help="recreate the catalog from the manifests in the bucket (for a new machine)",
        description="recreate the catalog from the manifests in the bucket (for a new machine)",
        parents=[COMMAND_OPTIONS],
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
        choices=TIERS,
        default="Standard",
        help="glacier-vault: retrieval tier for the manifests (default: Standard)",
    )


def _by_source(adopted: list[Manifest]) -> str:
    """`` (data: 2, home: 1)``, or nothing when nothing was adopted."""
    counts: dict[str, int] = defaultdict(int)
    for manifest in adopted:
        counts[manifest.backup.source] += 1
    listed = ", ".join(f"{source}: {n}" for source, n in sorted(counts.items()))
    return f" ({listed})" if listed else ""


def run(args: argparse.Namespace) -> int:
    """``catalog rebuild [--force]``: the only catalog action so far."""
    from btrsendd.rebuild import rebuild_catalog
    from btrsendd.repository import open_repository

    config = load_config(args)
    with open_repository(config, lock="catalog rebuild") as repo:
        found = rebuild_catalog(repo, force=args.force, wait=not args.no_wait, tier=args.tier)
    if found is None:
        print(
            f"retrievals requested from {repo.storage.description} (hours on AWS); run "
            "the same command again later to finish the rebuild"
        )
        return 0
    for line in found.skipped:
        print(f"btrsendd: warning: skipped {line}", file=sys.stderr)
    print(
        f"catalog rebuilt from {repo.storage.description}: {len(found.manifests)} adopted, "
        f"{len(found.skipped)} skipped{_by_source(found.manifests)}"
        + ("; see the warnings" if found.skipped else "")
    )
    # The catalog holds what could be adopted, but the bucket held more: say so to scripts.
    return 1 if found.skipped else 0

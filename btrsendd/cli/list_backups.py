"""``btrsendd list``: the backups in the catalog, as a table or (``--json``) for scripts."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, load_config, print_table
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.model import Backup


def register(commands: Commands) -> None:
    p = add_command(commands, "list", run, "list backups from the catalog")
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per backup")


def backup_json(row: Backup) -> dict[str, Any]:
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
        # Whether find, diff and restore --path can see into the backup.
        "file_index": row.file_index is not None,
    }


def run(args: argparse.Namespace) -> int:
    from btrsendd.repository import open_repository

    config = load_config(args)
    if args.source is not None:
        config.source(args.source)  # an unknown name is a usage error, not an empty list
    with open_repository(config) as repo:
        rows = repo.catalog.backups(args.source, states=("complete", "uploading", "expiring"))
    if args.json:
        print(json.dumps([backup_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no backups yet")
        return 0
    print_table(
        ("SOURCE", "DATE", "KIND", "PARENT", "STATE", "RAW", "STORED", "VOLS", "ID"),
        [
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
        ],
    )
    return 0

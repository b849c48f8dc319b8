"""``btrsendd catalog rebuild``: recreate the catalog from the manifests in storage.

This is how a new machine (or one that lost its state directory) gets its backups back: the
manifests are the truth and stay in STANDARD storage, so reading them costs no retrieval.
Only backups that can actually be restored are adopted: every volume must be in storage with
the size its manifest records, and an incremental's parent must have been adopted too.
Anything else is reported and left out, so ``list`` never offers a day that cannot come back.

The new catalog is written beside the old one and moved into place only once complete, inside
the state directory's lock: an interrupted rebuild leaves the old catalog as it was.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from btrsendd.backup import open_engine
from btrsendd.catalog import CATALOG_FILE, Catalog
from btrsendd.config import config_path, load_config
from btrsendd.errors import BtrsenddError, UsageError
from btrsendd.manifest import MANIFEST_NAME, Manifest
from btrsendd.restore import FIRST_POLL_SECONDS, poll_seconds
from btrsendd.storage import object_key
from btrsendd.storage.base import Storage


@dataclass
class Found:
    """What the manifests in storage hold: restorable manifests, and what was left out."""

    manifests: list[Manifest] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _missing_volumes(manifest: Manifest, directory: str, sizes: dict[str, int]) -> list[str]:
    """What is wrong with the stored volumes of ``manifest``, one phrase per volume."""
    found = []
    for v in manifest.volumes:
        size = sizes.get(f"{directory}/{v.name}")
        if size is None:
            found.append(f"volume {v.index} missing")
        elif size != v.stored_size:
            found.append(f"volume {v.index} is {size} bytes, {v.stored_size} recorded")
    return found


def _stored_backups(storage: Storage, prefix: str, found: Found) -> list[Manifest]:
    """Manifests that are readable, in their backup's place, with every volume stored."""
    root = object_key(prefix, "")  # "<prefix>/", or "" for the whole bucket
    sizes = {obj.key: obj.size for obj in storage.list(root)}
    complete = []
    for key in sizes:
        parts = key[len(root) :].split("/")
        if len(parts) != 3 or parts[2] != MANIFEST_NAME:
            continue
        try:
            manifest = Manifest.from_json(storage.get_bytes(key), key)
        except BtrsenddError as exc:
            found.warnings.append(f"skipped {key}: {exc}")
            continue
        b = manifest.backup
        directory = object_key(prefix, b.source, b.id)
        if key != f"{directory}/{MANIFEST_NAME}":
            found.warnings.append(
                f"skipped {key}: it describes backup {b.id} of {b.source!r}, which belongs "
                f"under {directory}/"
            )
            continue
        damaged = _missing_volumes(manifest, directory, sizes)
        if damaged:
            found.warnings.append(
                f"skipped backup {b.id} ({b.source} {b.date}): {', '.join(damaged)}"
            )
            continue
        complete.append(manifest)
    return complete


def read_manifests(storage: Storage, prefix: str) -> Found:
    """Every restorable backup under ``<prefix>/<source>/<backup-id>/manifest.json``.

    Parents come before their children in the result (the catalog's foreign keys need
    that); a backup whose chain is broken is reported, not returned.
    """
    found = Found()
    candidates = _stored_backups(storage, prefix, found)
    # Oldest first per source, so a parent is always considered before its children.
    candidates.sort(key=lambda m: (m.backup.source, m.backup.date, m.backup.completed_at or ""))
    adopted: set[str] = set()
    taken: dict[tuple[str, date], str] = {}
    for manifest in candidates:
        b = manifest.backup
        if b.parent_id is not None and b.parent_id not in adopted:
            found.warnings.append(
                f"skipped backup {b.id} ({b.source} {b.date}): its parent {b.parent_id} is "
                "missing or was skipped, so it cannot be restored"
            )
        elif (b.source, b.date) in taken:
            found.warnings.append(
                f"skipped backup {b.id} ({b.source} {b.date}): backup "
                f"{taken[(b.source, b.date)]} has the same source and date (the catalog "
                "holds one backup per day)"
            )
        else:
            taken[(b.source, b.date)] = b.id
            adopted.add(b.id)
            found.manifests.append(manifest)
    return found


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _replace_catalog(state_dir: Path, manifests: list[Manifest]) -> None:
    """Write a catalog of ``manifests`` beside the current one, then move it into place."""
    final = state_dir / CATALOG_FILE
    temp = _with_suffix(final, ".rebuild")
    for leftover in (temp, _with_suffix(temp, "-wal"), _with_suffix(temp, "-shm")):
        leftover.unlink(missing_ok=True)
    fresh = Catalog(temp)
    try:
        for manifest in manifests:
            fresh.insert_complete(manifest.backup, manifest.volumes)
    finally:
        fresh.close()
    # The old catalog's connection is closed by now, which folds its WAL back in; stale
    # -wal/-shm files must not be applied to the new file that takes its name.
    for stale in (_with_suffix(final, "-wal"), _with_suffix(final, "-shm")):
        stale.unlink(missing_ok=True)
    temp.replace(final)


def _manifests_at_hand(storage: Storage, prefix: str, args: argparse.Namespace) -> bool:
    """Make the listing and the manifests readable; False if that is still under way.

    S3 and local storage have both at hand.  A Glacier vault has neither: its key index comes
    from an inventory job and every manifest from a retrieval job, each hours on AWS, so with
    ``--no-wait`` the jobs are started (or found running) and the command exits, to be run
    again; both kinds of job are recorded, so a second run never starts them twice.
    """
    rebuild_index = getattr(storage, "rebuild_index", None)
    if rebuild_index is None:
        return True
    if not rebuild_index(wait=not args.no_wait, poll_seconds=poll_seconds()):
        return False
    keys = [o.key for o in storage.list(object_key(prefix, "")) if o.key.endswith(MANIFEST_NAME)]
    delay = 0.0
    while True:
        waiting = []
        for key in keys:
            state = storage.thaw_state(key)
            if state == "archived":
                storage.request_thaw(key, args.tier, 1)
            if state != "readable":
                waiting.append(key)
        if not waiting or args.no_wait:
            return not waiting
        keys = waiting
        time.sleep(delay)
        delay = min(max(delay * 2, FIRST_POLL_SECONDS), poll_seconds())


def cmd_catalog(args: argparse.Namespace) -> int:
    """``catalog rebuild [--force]``: the only catalog action so far."""
    config = load_config(config_path(args.config))
    with open_engine(config, lock="catalog rebuild") as engine:
        if not engine.catalog.is_empty() and not args.force:
            count = len(engine.catalog.backups(states=("uploading", "complete", "expiring")))
            raise UsageError(
                f"the catalog in {config.state_dir} is not empty ({count} backup(s)); pass "
                "--force to replace it with what the manifests in storage say"
            )
        if not _manifests_at_hand(engine.storage, config.storage.prefix, args):
            print(
                f"retrievals requested from {engine.storage.description} (hours on AWS); run "
                "the same command again later to finish the rebuild"
            )
            return 0
        found = read_manifests(engine.storage, config.storage.prefix)
        engine.catalog.close()  # before its file is replaced; open_engine closes it again
        _replace_catalog(config.state_dir, found.manifests)
    for warning in found.warnings:
        print(f"btrsendd: warning: {warning}", file=sys.stderr)
    by_source: dict[str, int] = defaultdict(int)
    for manifest in found.manifests:
        by_source[manifest.backup.source] += 1
    summary = ", ".join(f"{source}: {n}" for source, n in sorted(by_source.items()))
    print(
        f"catalog rebuilt from {engine.storage.description}: {len(found.manifests)} backup(s)"
        + (f" ({summary})" if summary else "")
        + (f"; {len(found.warnings)} skipped, see the warnings" if found.warnings else "")
    )
    return 0

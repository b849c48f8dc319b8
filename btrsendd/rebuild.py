"""Rebuilding the catalog from the manifests in storage (``btrsendd catalog rebuild``).

This is how a new machine (or one that lost its state directory) gets its backups back: the
manifests are the truth and stay in STANDARD storage, so reading them costs no retrieval.
Only backups that can actually be restored are adopted: the manifest passes the strict schema
(``manifest.py``: no future dates, no unsafe names, sizes that add up) and sits in its
backup's place, every volume is in storage with the size the manifest records, and an
incremental's parent was adopted too, with the send stream it continues where both recorded
one.  Anything else is skipped with one warning naming its key, and the command exits 1: a
bad object in the bucket costs that backup (and its descendants), never the whole recovery,
and ``list`` never offers a day that cannot come back.

The new catalog is written beside the old one and moved into place only once complete, inside
the state directory's lock: an interrupted rebuild leaves the old catalog as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

from btrsendd.catalog import Catalog
from btrsendd.catalog_schema import CATALOG_FILE
from btrsendd.errors import NotThawedError, UsageError
from btrsendd.layout import MANIFEST_NAME, Layout
from btrsendd.log import get_logger
from btrsendd.manifest import (
    Manifest,
    ManifestError,
    oversized,
    read_manifest,
    shown,
)
from btrsendd.model import Backup
from btrsendd.names import UnsafeName, check_name
from btrsendd.rebuild_objects import Candidate, inventory, stored_version
from btrsendd.repository import Repository
from btrsendd.restore import FIRST_POLL_SECONDS, poll_seconds
from btrsendd.storage.base import IndexRebuild, Locking, Storage, Tier, thawing


@dataclass
class Found:
    """What the manifests in storage hold: the backups to adopt, and the manifests skipped."""

    manifests: list[Manifest] = field(default_factory=list)
    #: One line per skipped manifest: its key, then why it was left out.
    skipped: list[str] = field(default_factory=list)

    def skip(self, key: str, why: str) -> None:
        self.skipped.append(f"{shown(key)}: {why}")


def _is_manifest(key: str) -> bool:
    return key.rpartition("/")[2] == MANIFEST_NAME


def _why_not_read(key: str, size: int, root: str) -> str | None:
    """Why the manifest at ``key`` is not read at all (nor thawed, on a vault), or None.

    Its key must be ``<root><source>/<backup-id>/manifest.json`` with names btrsendd could
    have written: the names become keys and paths, so a ``..`` or a ``/`` is never used.
    """
    parts = key[len(root) :].split("/")
    if len(parts) != 3:
        return f"not where btrsendd keeps manifests ({root}<source>/<backup-id>/{MANIFEST_NAME})"
    try:
        check_name("source", parts[0])
        check_name("backup id", parts[1])
    except UnsafeName as exc:
        return f"not in a backup's directory: {exc}"
    return oversized(size)


def _with_versions(
    storage: Storage, manifest: Manifest, layout: Layout, objects: dict[str, list[Candidate]]
) -> Manifest | str:
    """``manifest`` with the stored version of each volume, or what is wrong with them."""
    volumes, problems = [], []
    for v in manifest.volumes:
        key = layout.key(manifest.backup, v.name)
        found = stored_version(storage, key, v, objects.get(key, []))
        if isinstance(found, str):
            problems.append(found)
        else:
            volumes.append(replace(v, version=found.version))
    if problems:
        return (
            f"backup {manifest.backup.id} ({manifest.backup.source} {manifest.backup.date}): "
            + ", ".join(problems)
        )
    return Manifest(_with_index(manifest.backup, layout, objects), tuple(volumes))


def _with_index(b: Backup, layout: Layout, objects: dict[str, list[Candidate]]) -> Backup:
    """``b`` with the stored version of its file index: the oldest with the recorded size
    (``load_index`` checks its SHA-256).  An index that is not stored costs only what reads
    it: the backup is adopted without one, with a warning."""
    if b.file_index is None:
        return b
    key = layout.key(b, b.file_index.name)
    sized = [c for c in objects.get(key, []) if c.size == b.file_index.stored_size]
    if sized:
        return replace(b, file_index=replace(b.file_index, version=sized[0].version))
    get_logger(source=b.source, backup_id=b.id).warning(
        "rebuild.index_missing",
        key=key,
        reason=f"no version of it is stored with the {b.file_index.stored_size} bytes recorded",
        detail="the backup is adopted and restores as a whole, but find, diff and restore "
        "--path cannot see into that day",
    )
    return replace(b, file_index=None)


def _adoptable(
    storage: Storage,
    layout: Layout,
    key: str,
    candidate: Candidate,
    objects: dict[str, list[Candidate]],
) -> Manifest | str:
    """The backup one version of the manifest at ``key`` describes, with its volumes'
    versions, if it can be restored; else why not."""
    why = _why_not_read(key, candidate.size, layout.root())
    if why is not None:
        return why
    try:
        manifest = read_manifest(storage, key, candidate.size, candidate.version)
    except (ManifestError, NotThawedError) as exc:
        # Anything else from storage (an endpoint down) stops the rebuild: the old
        # catalog stays, and running the command again reads the manifest.
        return exc.detail if isinstance(exc, ManifestError) else str(exc)
    b = manifest.backup
    if key != layout.manifest_key(b):
        return (
            f"it describes backup {b.id} of {b.source}, which belongs under "
            f"{layout.backup_dir_of(b)}"
        )
    found = _with_versions(storage, manifest, layout, objects)
    if isinstance(found, str):
        return found
    return Manifest(replace(found.backup, manifest_version=candidate.version), found.volumes)


def _stored_backups(
    storage: Storage, prefix: str, found: Found
) -> list[tuple[str, Manifest, Candidate]]:
    """Manifests (with their keys) that are valid, in their backup's place, with every
    volume stored; everything else is skipped in ``found``.  Of a manifest's versions the
    oldest that passes is taken (``rebuild_objects``)."""
    layout = Layout(prefix)
    objects = inventory(storage, layout.root())  # under "<prefix>/", or the whole bucket
    complete = []
    for key, candidates in objects.items():
        if not _is_manifest(key):
            continue
        reasons = []
        for candidate in candidates:
            adopted = _adoptable(storage, layout, key, candidate, objects)
            if isinstance(adopted, Manifest):
                complete.append((key, adopted, candidate))
                break
            reasons.append(adopted)
        else:
            more = (
                f" (and {len(reasons) - 1} newer version(s) no better)" if len(reasons) > 1 else ""
            )
            found.skip(key, reasons[0] + more)
    return complete


@dataclass
class _Adopted:
    """The backups adopted so far: by id (with the key of each manifest), and by day."""

    keys: dict[str, str] = field(default_factory=dict)
    rows: dict[str, Backup] = field(default_factory=dict)
    by_day: dict[tuple[str, date], str] = field(default_factory=dict)

    def add(self, key: str, b: Backup) -> None:
        self.keys[b.id] = key
        self.rows[b.id] = b
        self.by_day[(b.source, b.date)] = b.id

    def why_not(self, b: Backup) -> str | None:
        """Why ``b`` cannot join the backups adopted so far, or None if it can."""
        if b.id in self.rows:
            return f"backup {b.id} was already adopted from {shown(self.keys[b.id])}"
        if (b.source, b.date) in self.by_day:
            return (
                f"backup {self.by_day[(b.source, b.date)]} has the same source and date (the "
                "catalog holds one backup per day)"
            )
        if b.parent_id is None:
            return None
        parent = self.rows.get(b.parent_id)
        if parent is None:
            return f"its parent {b.parent_id} is missing or was skipped, so it cannot be restored"
        if (parent.source, parent.chain) != (b.source, b.chain):
            return f"its parent {b.parent_id} is of another source or chain"
        if b.stream and parent.stream and not b.stream.continues(parent.stream):
            return (
                f"its send stream continues subvolume {b.stream.parent_uuid} at ctransid "
                f"{b.stream.parent_ctransid}, but its parent {b.parent_id} sent "
                f"{parent.stream.uuid} at ctransid {parent.stream.ctransid}, so it cannot be "
                "restored"
            )
        return None


_NO_TIME = datetime.min.replace(tzinfo=UTC)


def read_manifests(storage: Storage, prefix: str) -> Found:
    """Every restorable backup under ``<prefix>/<source>/<backup-id>/manifest.json``.

    Parents come before their children in the result (the catalog's foreign keys need
    that); a backup whose chain is broken is skipped, not returned.
    """
    found = Found()
    candidates = _stored_backups(storage, prefix, found)
    # Oldest first per source, so a parent (always dated earlier) is considered first; of
    # two backups of one day, the one stored first wins (by the storage's clock where it
    # keeps versions, which no writer sets; else by the completion the manifest records),
    # whatever order storage lists.
    candidates.sort(
        key=lambda c: (
            c[1].backup.source,
            c[1].backup.date,
            c[2].stored_at or _NO_TIME,
            c[1].backup.completed_at or "",
            c[1].backup.id,
        )
    )
    adopted = _Adopted()
    for key, manifest, _ in candidates:
        b = manifest.backup
        why = adopted.why_not(b)
        if why is None:
            adopted.add(key, b)
            found.manifests.append(manifest)
        else:
            found.skip(key, f"backup {b.id} ({b.source} {b.date}): {why}")
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


def _manifests_at_hand(storage: Storage, prefix: str, *, wait: bool, tier: Tier) -> bool:
    """Make the listing and the manifests readable; False if that is still under way.

    S3 and local storage have both at hand.  A Glacier vault has neither: its key index comes
    from an inventory job and every manifest from a retrieval job, each hours on AWS, so with
    ``wait`` False (``--no-wait``) the jobs are started (or found running) and the command
    exits, to be run again; both kinds of job are recorded, so a second run never starts
    them twice.
    """
    if not isinstance(storage, IndexRebuild):
        return True
    if not storage.rebuild_index(wait=wait, poll_seconds=poll_seconds()):
        return False
    cold = thawing(storage)
    root = Layout(prefix).root()
    # Only manifests that will be read: a retrieval of anything else is money wasted.
    keys = [
        o.key
        for o in storage.list(root)
        if _is_manifest(o.key) and _why_not_read(o.key, o.size, root) is None
    ]
    delay = 0.0
    while True:
        waiting = []
        for key in keys:
            state = cold.thaw_state(key)
            if state == "archived":
                cold.request_thaw(key, tier, 1)
            if state != "readable":
                waiting.append(key)
        if not waiting or not wait:
            return not waiting
        keys = waiting
        time.sleep(delay)
        delay = min(max(delay * 2, FIRST_POLL_SECONDS), poll_seconds())


def _with_lock(storage: Locking, layout: Layout, manifest: Manifest) -> Manifest:
    """``manifest`` with the lock its manifest carries, which btrsendd set for the whole
    backup: what later cycles extend from."""
    b = manifest.backup
    if b.manifest_version is None:
        return manifest
    lock = storage.lock_of(layout.manifest_key(b), b.manifest_version)
    return Manifest(replace(b, locked_until=None if lock is None else lock.until), manifest.volumes)


def rebuild_catalog(repo: Repository, *, force: bool, wait: bool, tier: Tier) -> Found | None:
    """Replace the catalog of ``repo`` (opened with the state directory's lock) with what the
    manifests in its storage say; None if retrievals are still under way (a vault), to be
    run again.

    A catalog that is not empty is replaced only with ``force``.
    """
    config = repo.config
    if not repo.catalog.is_empty() and not force:
        count = len(repo.catalog.backups(states=("uploading", "complete", "expiring")))
        raise UsageError(
            f"the catalog in {config.state_dir} is not empty ({count} backup(s)); pass "
            "--force to replace it with what the manifests in storage say"
        )
    if not _manifests_at_hand(repo.storage, config.storage.prefix, wait=wait, tier=tier):
        return None
    found = read_manifests(repo.storage, config.storage.prefix)
    if config.storage.object_lock != "off" and isinstance(repo.storage, Locking):
        found.manifests = [_with_lock(repo.storage, repo.layout, m) for m in found.manifests]
    repo.catalog.close()  # before its file is replaced; open_repository closes it again
    _replace_catalog(config.state_dir, found.manifests)
    return found

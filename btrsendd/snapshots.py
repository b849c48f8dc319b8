"""Read-only btrfs snapshots: take, list, find, delete, and local retention.

Snapshots live in ``<snapshot_dir>/YYYY-MM-DD`` (a second one the same day, e.g. from
``backup --force``, becomes ``YYYY-MM-DD.1``, then ``.2`` …).  The name is the only index:
nothing else records which snapshots exist, so listing is a directory scan that trusts only
entries that are both named like a date and are read-only subvolumes — anything else in the
directory is the user's and is never touched.

The btrfs calls themselves (subvolume inspection, creation and deletion) are ``btrfs.py``'s;
this module decides what they are called on.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from btrsendd import permissions
from btrsendd.errors import OperationalError, UsageError
from btrsendd.model import Backup
from btrsendd.pipeline import btrfs

_NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.([1-9]\d*))?$")


@dataclass(frozen=True)
class Snapshot:
    """One read-only snapshot of a source, as found on disk."""

    path: Path
    date: dt.date
    #: 0 for ``YYYY-MM-DD``, n for ``YYYY-MM-DD.n``: orders snapshots taken the same day.
    seq: int
    #: The subvolume UUID (hex), so a snapshot can be recognised even after a rename and a
    #: different subvolume that took its name is never mistaken for it.
    uuid: str
    #: The UUID (hex) of the subvolume it is a snapshot of; None for one that is no
    #: snapshot at all (made with ``btrfs subvolume create``).
    origin: str | None = None

    @property
    def name(self) -> str:
        return snapshot_name(self.date, self.seq)


def snapshot_name(day: dt.date, seq: int = 0) -> str:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD.n``: the on-disk name, also recorded in the catalog."""
    return day.isoformat() if seq == 0 else f"{day.isoformat()}.{seq}"


def _parse_name(name: str) -> tuple[dt.date, int] | None:
    match = _NAME_RE.match(name)
    if match is None:
        return None
    try:
        day = dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return day, int(match.group(2) or 0)


def _dated_entries(snapshot_dir: Path) -> list[tuple[Path, dt.date, int]]:
    """Every entry named like a snapshot, whatever it is; [] when the directory is missing."""
    try:
        names = [entry.name for entry in os.scandir(snapshot_dir)]
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise UsageError(
            f"{snapshot_dir} is not a directory; point sources.snapshot_dir at a directory"
        ) from None
    except OSError as exc:
        raise btrfs.operational_error(f"list {snapshot_dir}", exc) from None
    entries = []
    for name in names:
        parsed = _parse_name(name)
        if parsed is not None:
            entries.append((snapshot_dir / name, *parsed))
    return entries


def _read_snapshot(path: Path, day: dt.date, seq: int) -> Snapshot | None:
    """The snapshot at ``path``, or None unless it is a read-only subvolume.

    Symlinks are skipped: following one could make retention delete a subvolume elsewhere.
    """
    if path.is_symlink() or not btrfs.is_subvolume(path):
        return None
    try:
        if not btrfs.is_read_only(path):
            return None
        info = btrfs.subvolume_info(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # deleted while we looked: not there
            return None
        raise btrfs.operational_error(f"inspect {path}", exc) from None
    return Snapshot(path=path, date=day, seq=seq, uuid=info.uuid, origin=info.parent_uuid)


def list_snapshots(snapshot_dir: Path) -> list[Snapshot]:
    """The read-only snapshots in ``snapshot_dir``, oldest first by (date, seq)."""
    found = []
    for path, day, seq in _dated_entries(snapshot_dir):
        snap = _read_snapshot(path, day, seq)
        if snap is not None:
            found.append(snap)
    return sorted(found, key=lambda s: (s.date, s.seq))


def find_snapshot(snapshot_dir: Path, day: dt.date, origin: str | None = None) -> Snapshot | None:
    """The newest snapshot dated ``day`` (highest seq), if any; with ``origin``, only a
    snapshot of the subvolume with that UUID (hex)."""
    same_day = [
        s
        for s in list_snapshots(snapshot_dir)
        if s.date == day and (origin is None or s.origin == origin)
    ]
    return same_day[-1] if same_day else None


def snapshot_of(snapshot_dir: Path, backup: Backup) -> Snapshot | None:
    """The local snapshot ``backup`` was sent from, if it is still there: same name, and the
    same UUID where one was recorded (a different subvolume that took the name is not it)."""
    if backup.snapshot is None:
        return None
    for snap in list_snapshots(snapshot_dir):
        if snap.name == backup.snapshot and backup.snapshot_uuid in (None, snap.uuid):
            return snap
    return None


def snapshot_by_uuid(snapshot_dir: Path, uuid: str) -> Snapshot | None:
    """The snapshot with subvolume UUID ``uuid`` (hex), if it is still in ``snapshot_dir``."""
    wanted = uuid.lower()
    return next((s for s in list_snapshots(snapshot_dir) if s.uuid == wanted), None)


def _ensure_snapshot_dir(source: Path, snapshot_dir: Path) -> None:
    """Create ``snapshot_dir`` itself (0700: snapshots hold every file of the source), then
    keep it private (``permissions.secure``).

    Inside the source's own subvolume it is made a subvolume of its own, so that it is no
    part of the source's send stream (the usual ``/home/.btrsendd`` for ``/home``).  Its
    parent is not created: a missing parent is far more often a typo in the configuration
    than a directory the user wants made.
    """
    if not snapshot_dir.exists():
        if not snapshot_dir.parent.is_dir():
            raise UsageError(
                f"the parent of {snapshot_dir} does not exist; create it or fix "
                "sources.snapshot_dir"
            )
        try:
            if btrfs.in_subvolume_of(snapshot_dir, source):
                btrfs.create_subvolume(snapshot_dir)
                snapshot_dir.chmod(0o700)
            else:
                snapshot_dir.mkdir(mode=0o700)
        except OSError as exc:
            # EEXIST: made meanwhile by another process, and checked below like any other.
            if exc.errno != errno.EEXIST:
                raise btrfs.operational_error(f"create {snapshot_dir}", exc) from None
    permissions.secure(snapshot_dir, permissions.SNAPSHOT_DIR)


def take_snapshot(
    source: Path, snapshot_dir: Path, day: dt.date, *, fresh: bool = False
) -> Snapshot:
    """Snapshot ``source`` read-only as ``<snapshot_dir>/YYYY-MM-DD``.

    Idempotent per day, so a cycle restarted after a crash reuses the day's snapshot (and its
    send stream stays byte-identical, which resume relies on): an existing snapshot of
    ``source`` dated ``day`` is returned as is.  ``fresh`` (``backup --force``) takes a new
    one as ``YYYY-MM-DD.n``, ``n`` one above the highest suffix present, so seq order is
    creation order.
    """
    btrfs.require_subvolume(source)
    _ensure_snapshot_dir(source, snapshot_dir)
    if not fresh:
        # Only a snapshot of this source: a subvolume named for the day that someone else
        # put there (while the directory was open to them) would be backed up in its place.
        existing = find_snapshot(snapshot_dir, day, origin=btrfs.inspect(source).uuid)
        if existing is not None:
            return existing
    taken = [seq for _, entry_day, seq in _dated_entries(snapshot_dir) if entry_day == day]
    seq = max(taken) + 1 if taken else 0
    while True:
        path = snapshot_dir / snapshot_name(day, seq)
        try:
            btrfs.create_snapshot(source, path, read_only=True)
        except OSError as exc:
            if exc.errno == errno.EEXIST:  # another process took this name meanwhile
                seq += 1
                continue
            if exc.errno == errno.EXDEV:
                raise UsageError(
                    f"{snapshot_dir} is not on the same btrfs filesystem as {source}; "
                    "snapshots stay on the source's filesystem: point sources.snapshot_dir at "
                    f"a directory there, e.g. {source / '.btrsendd'}"
                ) from None
            raise btrfs.operational_error(f"snapshot {source} to {path}", exc) from None
        break
    info = btrfs.inspect(path)
    return Snapshot(path=path, date=day, seq=seq, uuid=info.uuid, origin=info.parent_uuid)


def delete_snapshot(snap: Snapshot) -> None:
    """Delete ``snap``'s subvolume; a snapshot already gone is not an error.

    The UUID is checked first so that a different subvolume now sitting at that path (a
    restore, a user's copy) is never deleted in its place.
    """
    try:
        uuid = btrfs.subvolume_info(snap.path).uuid
        if uuid != snap.uuid:
            raise OperationalError(
                f"refusing to delete {snap.path}: it is no longer the snapshot btrsendd "
                f"listed (UUID {uuid}, expected {snap.uuid})"
            )
        btrfs.delete_subvolume(snap.path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise btrfs.operational_error(f"delete snapshot {snap.path}", exc) from None


def retention(
    snapshots: Sequence[Snapshot], today: dt.date, keep_days: int, keep: Collection[Path]
) -> list[Snapshot]:
    """The snapshots local retention deletes: those more than ``keep_days`` old.

    Spared: those in ``keep`` (the parents the next incremental is sent against — deleting
    one would force a full backup) and always the newest snapshot, so there is a parent to
    send against however long the machine was off.
    """
    if not snapshots:
        return []
    newest = max(snapshots, key=lambda s: (s.date, s.seq))
    cutoff = today - dt.timedelta(days=keep_days)
    return sorted(
        (s for s in snapshots if s.date < cutoff and s.path not in keep and s != newest),
        key=lambda s: (s.date, s.seq),
    )


def prune(
    snapshot_dir: Path, today: dt.date, keep_days: int, keep: Collection[Path]
) -> list[Snapshot]:
    """Apply ``retention`` to ``snapshot_dir``; returns the snapshots deleted."""
    doomed = retention(list_snapshots(snapshot_dir), today, keep_days, keep)
    for snap in doomed:
        delete_snapshot(snap)
    return doomed

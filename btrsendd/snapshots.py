"""Read-only btrfs snapshots: take, list, find, delete, and local retention.

Snapshots live in ``<snapshot_dir>/YYYY-MM-DD`` (a second one the same day, e.g. from
``backup --force``, becomes ``YYYY-MM-DD.1``, then ``.2`` …).  The name is the only index:
nothing else records which snapshots exist, so listing is a directory scan that trusts only
entries that are both named like a date and are read-only subvolumes — anything else in the
directory is the user's and is never touched.

All btrfs work goes through the btrfsutil binding (ioctls, no ``btrfs`` CLI to parse), except
the filesystem identity in ``same_filesystem``, which libbtrfsutil does not offer.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btrsendd import permissions
from btrsendd.errors import OperationalError, UsageError
from btrsendd.model import Backup

_NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.([1-9]\d*))?$")

# BTRFS_IOC_FS_INFO = _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args): the struct is 1024
# bytes and the filesystem UUID (fsid) sits at offset 16 (after max_id and num_devices).
_FS_INFO_SIZE = 1024
_BTRFS_IOC_FS_INFO = (2 << 30) | (_FS_INFO_SIZE << 16) | (0x94 << 8) | 31
_FSID = slice(16, 32)


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


def _btrfsutil() -> Any:
    """The btrfsutil module, or an error that says how to fix a mismatched install.

    Imported on first use, not at module import, so that commands that never touch btrfs
    (``plan``, ``list``, ``backup-stdin``) work even where the binding cannot load — and the
    ones that do touch it fail with a message instead of a traceback.  The usual cause is a
    binding newer than the system library (PyPI's 6.14+ against Debian 12's libbtrfsutil 6.2).
    """
    try:
        import btrfsutil
    except ImportError as exc:
        raise OperationalError(
            f"cannot load the btrfsutil Python binding ({exc}); install the release that "
            "matches the system libbtrfsutil (btrfsutil 6.10-6.13 for libbtrfsutil 6.2)"
        ) from None
    return btrfsutil


def _operational(action: str, exc: OSError) -> OperationalError:
    """Map an OSError from a btrfs call to a one-line message that says what to do."""
    detail = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return OperationalError(
            f"cannot {action}: no space left on the filesystem; free space there or lower "
            "snapshots.keep_days so older snapshots are pruned"
        )
    if exc.errno in (errno.EPERM, errno.EACCES):
        return OperationalError(f"cannot {action}: permission denied; btrsendd must run as root")
    if exc.errno == errno.EROFS:
        return OperationalError(f"cannot {action}: the filesystem is mounted read-only")
    return OperationalError(f"cannot {action}: {detail}")


def is_subvolume(path: Path) -> bool:
    """Whether ``path`` is a btrfs subvolume; False for a missing path or another filesystem."""
    try:
        return bool(_btrfsutil().is_subvolume(path))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise _operational(f"inspect {path}", exc) from None


def require_subvolume(path: Path) -> None:
    """Raise ``UsageError`` unless ``path`` is a subvolume: only those can be snapshotted."""
    if not path.exists():
        raise UsageError(
            f"{path} does not exist; create it with `btrfs subvolume create {path}` or point "
            "sources.path at an existing subvolume"
        )
    if not is_subvolume(path):
        raise UsageError(
            f"{path} is not a btrfs subvolume; create it with `btrfs subvolume create` or "
            "point sources.path at one"
        )


def _fsid(path: Path) -> bytes | None:
    """The btrfs filesystem UUID of the directory ``path``; None if it is not on btrfs."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _operational(f"open {path}", exc) from None
    try:
        return filesystem_id(fd, str(path))
    finally:
        os.close(fd)


def filesystem_id(fd: int, what: str) -> bytes | None:
    """The btrfs filesystem UUID of the open directory ``fd`` (``what`` names it in errors);
    None if it is not on btrfs.  By descriptor, so a path swapped meanwhile cannot mislead."""
    try:
        buf = bytearray(_FS_INFO_SIZE)
        fcntl.ioctl(fd, _BTRFS_IOC_FS_INFO, buf)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise _operational(f"read the filesystem id of {what}", exc) from None
    return bytes(buf[_FSID])


def _nearest_directory(path: Path) -> Path:
    """``path`` if it is a directory, else its nearest existing ancestor directory."""
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (or their nearest existing parents) are on one btrfs filesystem.

    A snapshot can only be created on the filesystem of its source.  ``st_dev`` and
    ``statvfs().f_fsid`` cannot tell: btrfs gives every subvolume its own value of both.  The
    filesystem UUID from BTRFS_IOC_FS_INFO is the same for every subvolume and mount of one
    filesystem and differs between filesystems.  False when either side is not on btrfs.
    """
    fsid_a = _fsid(_nearest_directory(a))
    return fsid_a is not None and fsid_a == _fsid(_nearest_directory(b))


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
        raise _operational(f"list {snapshot_dir}", exc) from None
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
    lib = _btrfsutil()
    try:
        if path.is_symlink() or not lib.is_subvolume(path):
            return None
        if not lib.get_subvolume_read_only(path):
            return None
        info = lib.subvolume_info(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # deleted while we looked: not there
            return None
        raise _operational(f"inspect {path}", exc) from None
    return Snapshot(path=path, date=day, seq=seq, uuid=bytes(info.uuid).hex(), origin=_origin(info))


def _origin(info: Any) -> str | None:
    parent = bytes(info.parent_uuid)
    return parent.hex() if any(parent) else None


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


def send_uuid(snap: Snapshot) -> str:
    """The UUID (hex) ``btrfs send`` names ``snap`` by in its stream: its received UUID when
    it has one (a snapshot of a read-only received subvolume keeps it), else its own."""
    try:
        received = bytes(_btrfsutil().subvolume_info(snap.path).received_uuid)
    except OSError as exc:
        raise _operational(f"inspect {snap.path}", exc) from None
    return received.hex() if any(received) else snap.uuid


def subvolume_id(path: Path) -> int:
    """The ID of the subvolume holding ``path`` (or its nearest existing parent directory)."""
    where = _nearest_directory(path)
    try:
        return int(_btrfsutil().subvolume_id(where))
    except OSError as exc:
        raise _operational(f"inspect {where}", exc) from None


def in_subvolume_of(path: Path, source: Path) -> bool:
    """Whether ``path`` (or, if missing, where it would be made) lies in ``source``'s own
    subvolume, and so in every ``btrfs send`` of it; a subvolume of its own does not."""
    return same_filesystem(path, source) and subvolume_id(path) == subvolume_id(source)


@dataclass(frozen=True)
class Nested:
    """The subvolumes beneath a source, as far as btrfs can name them."""

    paths: list[Path]
    #: How many more btrfs could not name: one under a path longer than it looks up (4,080
    #: bytes), which anyone who can create a subvolume in the source can make.
    unnamed: int = 0


#: Unnamable subvolumes counted before the listing stops: whatever fails that often is not
#: one odd subvolume, and the listing is only a report.
_MAX_UNNAMED = 1000


def nested_subvolumes(source: Path) -> Nested:
    """Every subvolume beneath the subvolume ``source``, at any depth (``btrfs send`` of a
    snapshot of ``source`` holds none of them: the snapshot shows an empty directory, the
    stream nothing at all).

    One whose path btrfs cannot look up is counted, not named: it must not make the listing,
    and so every backup of the source, fail.  The iterator goes on past it.
    """
    paths: list[Path] = []
    unnamed = 0
    try:
        with _btrfsutil().SubvolumeIterator(source) as found:
            while unnamed < _MAX_UNNAMED:
                try:
                    relative, _ = next(found)
                except StopIteration:
                    break
                except OSError:
                    unnamed += 1
                    continue
                paths.append(source / relative)
    except OSError as exc:
        raise _operational(f"list the subvolumes under {source}", exc) from None
    return Nested(paths, unnamed)


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
            if in_subvolume_of(snapshot_dir, source):
                _btrfsutil().create_subvolume(snapshot_dir)
                snapshot_dir.chmod(0o700)
            else:
                snapshot_dir.mkdir(mode=0o700)
        except OSError as exc:
            # EEXIST: made meanwhile by another process, and checked below like any other.
            if exc.errno != errno.EEXIST:
                raise _operational(f"create {snapshot_dir}", exc) from None
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
    require_subvolume(source)
    _ensure_snapshot_dir(source, snapshot_dir)
    lib = _btrfsutil()
    if not fresh:
        # Only a snapshot of this source: a subvolume named for the day that someone else
        # put there (while the directory was open to them) would be backed up in its place.
        try:
            source_uuid = bytes(lib.subvolume_info(source).uuid).hex()
        except OSError as exc:
            raise _operational(f"inspect {source}", exc) from None
        existing = find_snapshot(snapshot_dir, day, origin=source_uuid)
        if existing is not None:
            return existing
    taken = [seq for _, entry_day, seq in _dated_entries(snapshot_dir) if entry_day == day]
    seq = max(taken) + 1 if taken else 0
    while True:
        path = snapshot_dir / snapshot_name(day, seq)
        try:
            lib.create_snapshot(source, path, read_only=True)
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
            raise _operational(f"snapshot {source} to {path}", exc) from None
        break
    try:
        info = lib.subvolume_info(path)
    except OSError as exc:
        raise _operational(f"inspect {path}", exc) from None
    return Snapshot(path=path, date=day, seq=seq, uuid=bytes(info.uuid).hex(), origin=_origin(info))


def delete_snapshot(snap: Snapshot) -> None:
    """Delete ``snap``'s subvolume; a snapshot already gone is not an error.

    The UUID is checked first so that a different subvolume now sitting at that path (a
    restore, a user's copy) is never deleted in its place.
    """
    lib = _btrfsutil()
    try:
        uuid = bytes(lib.subvolume_info(snap.path).uuid).hex()
        if uuid != snap.uuid:
            raise OperationalError(
                f"refusing to delete {snap.path}: it is no longer the snapshot btrsendd "
                f"listed (UUID {uuid}, expected {snap.uuid})"
            )
        lib.delete_subvolume(snap.path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise _operational(f"delete snapshot {snap.path}", exc) from None


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

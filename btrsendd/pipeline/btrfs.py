"""Every call btrsendd makes into btrfs: send, receive, and subvolumes.

``btrfs send`` and ``btrfs receive`` run as programs (through ``piper``); everything else goes
through the btrfsutil binding (ioctls, no ``btrfs`` output to parse), except the filesystem
identity, which libbtrfsutil does not offer and is read with its own ioctl.  Errors become
one line that says what to do (``operational_error``); the wrappers that only translate a
call leave its ``OSError`` to the caller, who knows which errors are expected there.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btrsendd.errors import OperationalError, UsageError
from btrsendd.pipeline import piper
from btrsendd.pipeline.readers import PipeReader

# BTRFS_IOC_FS_INFO = _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args): the struct is 1024
# bytes and the filesystem UUID (fsid) sits at offset 16 (after max_id and num_devices).
_FS_INFO_SIZE = 1024
_BTRFS_IOC_FS_INFO = (2 << 30) | (_FS_INFO_SIZE << 16) | (0x94 << 8) | 31
_FSID = slice(16, 32)


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


def operational_error(action: str, exc: OSError) -> OperationalError:
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


def fd_path(fd: int, name: str = "") -> str:
    """A path that reaches ``name`` inside the open directory ``fd`` (or ``fd`` itself).

    The kernel resolves ``/proc/self/fd/N`` to the directory that was opened, wherever it is
    now and whatever took its old name; only ``name``, one component, is looked up in it.
    """
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")


# -- subvolumes: thin, typed translations of btrfsutil (OSError to the caller) ----------------


@dataclass(frozen=True)
class SubvolumeInfo:
    """What btrsendd reads about a subvolume; UUIDs in hex."""

    uuid: str
    #: The UUID of the subvolume it is a snapshot of; None for one that is no snapshot.
    parent_uuid: str | None
    #: The UUID of the subvolume it was received from (``btrfs receive``), if any.
    received_uuid: str | None


def _uuid(raw: bytes) -> str | None:
    """A UUID field in hex; None for the all-zero one btrfs uses for "none"."""
    return raw.hex() if any(raw) else None


def subvolume_info(path: Path | str) -> SubvolumeInfo:
    info = _btrfsutil().subvolume_info(path)
    return SubvolumeInfo(
        uuid=bytes(info.uuid).hex(),
        parent_uuid=_uuid(bytes(info.parent_uuid)),
        received_uuid=_uuid(bytes(info.received_uuid)),
    )


def is_read_only(path: Path) -> bool:
    return bool(_btrfsutil().get_subvolume_read_only(path))


def create_subvolume(path: Path) -> None:
    _btrfsutil().create_subvolume(path)


def create_snapshot(source: Path | str, path: Path | str, *, read_only: bool = False) -> None:
    _btrfsutil().create_snapshot(source, path, read_only=read_only)


def delete_subvolume(path: Path | str) -> None:
    _btrfsutil().delete_subvolume(path)


def subvolume_id_of(fd: int) -> int:
    """The id of the subvolume holding the open directory ``fd``: with the inode number, an
    identity that lasts across remounts, unlike the device number."""
    return int(_btrfsutil().subvolume_id(fd))


# -- subvolumes: questions answered, errors explained ------------------------------------------


def inspect(path: Path) -> SubvolumeInfo:
    """``subvolume_info``, failing with a message instead of an ``OSError``."""
    try:
        return subvolume_info(path)
    except OSError as exc:
        raise operational_error(f"inspect {path}", exc) from None


def send_uuid(path: Path) -> str:
    """The UUID (hex) ``btrfs send`` names the subvolume at ``path`` by in its stream: its
    received UUID when it has one (a snapshot of a read-only received subvolume keeps it),
    else its own."""
    info = inspect(path)
    return info.received_uuid or info.uuid


def is_subvolume(path: Path) -> bool:
    """Whether ``path`` is a btrfs subvolume; False for a missing path or another filesystem."""
    try:
        return bool(_btrfsutil().is_subvolume(path))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise operational_error(f"inspect {path}", exc) from None


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
        raise operational_error(f"open {path}", exc) from None
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
        raise operational_error(f"read the filesystem id of {what}", exc) from None
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


def subvolume_id(path: Path) -> int:
    """The ID of the subvolume holding ``path`` (or its nearest existing parent directory)."""
    where = _nearest_directory(path)
    try:
        return int(_btrfsutil().subvolume_id(where))
    except OSError as exc:
        raise operational_error(f"inspect {where}", exc) from None


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
        raise operational_error(f"list the subvolumes under {source}", exc) from None
    return Nested(paths, unnamed)


# -- send and receive --------------------------------------------------------------------------


def send_command(snapshot: Path, parent: Path | None) -> list[str]:
    """The ``btrfs send`` command for a full (no parent) or incremental backup.

    ``-q`` is given as the global option: ``btrfs send -q`` is its deprecated alias.  Quiet
    matters because stderr is quoted in errors, and "At subvol ..." is not an error.
    """
    cmd = ["btrfs", "-q", "send"]
    if parent is not None:
        cmd += ["-p", str(parent)]
    return [*cmd, str(snapshot)]


def run_send(cmd: Sequence[str]) -> AbstractContextManager[PipeReader]:
    """Run ``cmd`` (normally ``send_command(...)``) and yield its stdout as a stream.

    The stream ends (``read`` returns ``b""``) only if the command exited 0; otherwise
    ``read`` raises ``PipelineError("btrfs send", stderr)``.  Leaving the block before the
    end also raises it, since a partly read send stream is a failed backup; if the block
    raised, the command is killed and the block's exception propagates.
    """
    return piper.output_of(piper.Stage("btrfs send", tuple(cmd)), "the send stream")


#: What btrfs receive says when all is well; left out of the lines quoted on failure.
_RECEIVE_CHATTER = ("At subvol ", "At snapshot ", "Chroot to ")


class Receive:
    """``btrfs receive`` into the open directory ``directory``, fed through ``stdin``.

    It is confined there (``--chroot``, reached through the descriptor), so whatever the
    stream names, nothing outside it is written.  Use as a context manager: leaving it kills
    and reaps the process if it still runs.
    """

    def __init__(self, directory: int) -> None:
        argv = ("btrfs", "receive", "-e", "--chroot", fd_path(directory))
        self._sink = piper.Sink(piper.Stage("btrfs receive", argv), pass_fds=(directory,))

    @property
    def stdin(self) -> int:
        return self._sink.stdin

    def finish(self) -> None:
        """End its input and wait; ``OperationalError`` (``failure``) unless it succeeded."""
        if self._sink.finish() != 0:
            raise OperationalError(self.failure())

    def kill(self) -> None:
        """Kill it if it still runs, and reap it."""
        self._sink.kill()

    def failure(self) -> str:
        """Why it failed: the last lines it wrote, save its chatter, or its exit status."""
        lines = self._sink.output().strip().splitlines()
        detail = [line for line in lines if not line.startswith(_RECEIVE_CHATTER)]
        return f"btrfs receive failed: {' '.join(detail[-3:]) or f'exit {self._sink.returncode}'}"

    def __enter__(self) -> Receive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sink.__exit__(*exc_info)

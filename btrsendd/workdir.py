"""A restore's working directory inside its target, and its removal, touching nothing else.

A restore target can be a shared directory that other users write to, so a name there proves
nothing: a symlink called like a working directory once led restore's clean-up to delete
subvolumes elsewhere.  So:

- the target and the working directory are opened once and reached through their descriptors
  from then on (``/proc/self/fd/N/NAME`` for the calls that want paths), never by name again;
- the working directory is private (root's, 0700) and recorded in the catalog, by subvolume
  and inode, the moment it exists;
- removal deletes only subvolumes inside such a directory, only if they are subvolumes of the
  target's own filesystem, and the directory itself only if it is still the one recorded;
- a leftover of a killed restore is removed only if all of that holds for it; anything else
  called like one is left alone, with a warning.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from btrsendd.catalog import Catalog
from btrsendd.errors import OperationalError, UsageError
from btrsendd.log import get_logger
from btrsendd.pipeline.btrfs import delete_subvolume, fd_path, filesystem_id, subvolume_id_of

#: Working directories inside a target start with this.
PREFIX = ".btrsendd-restore-"

#: The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
_SUBVOLUME_ROOT_INODE = 256

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _listing(directory: int) -> list[tuple[str, os.stat_result]]:
    """The entries of the open directory ``directory`` now, each with its own ``lstat``.

    Read through a descriptor opened for the purpose, not ``directory`` itself: btrfs may
    keep answering a descriptor's reads with the entries it had when first read, and
    ``btrfs receive`` adds one meanwhile.
    """
    fd = os.open(".", _OPEN_DIR, dir_fd=directory)
    try:
        with os.scandir(fd) as entries:
            return [(entry.name, entry.stat(follow_symlinks=False)) for entry in entries]
    finally:
        os.close(fd)


@dataclass
class Target:
    """A directory restore writes into (the target, or ``--writable``'s parent), opened once:
    before anything is requested, so that the directory checked is the one written to hours
    later, whatever has taken its name meanwhile."""

    path: Path
    fd: int
    #: The btrfs filesystem it is on: subvolumes on any other are never touched.
    fsid: bytes

    @classmethod
    @contextmanager
    def open(cls, path: Path, what: str = "restore target") -> Iterator[Target]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise UsageError(f"{what} {path} is not a directory; create it first") from None
        except OSError as exc:
            raise UsageError(f"cannot open {what} {path}: {exc.strerror}") from None
        try:
            fsid = filesystem_id(fd, str(path))
            if fsid is None:
                raise UsageError(
                    f"{what} {path} is not on a btrfs filesystem; btrfs receive needs one"
                )
            yield cls(path, fd, fsid)
        finally:
            os.close(fd)

    def has(self, name: str) -> bool:
        """Whether an entry ``name`` (of any kind, a dangling symlink too) is in it now."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    @property
    def real_path(self) -> str:
        """How the catalog and the restore lock name the target."""
        return os.path.realpath(self.path)

    def record_key(self, name: str) -> str:
        """How the catalog names a working directory: the target's real path and the name."""
        return os.path.join(self.real_path, name)


@dataclass
class Workdir:
    """One working directory of this restore (or a verified leftover of an earlier one)."""

    target: Target
    name: str
    fd: int
    device: int
    inode: int

    @property
    def path(self) -> Path:
        """For messages only: the name may point elsewhere by now."""
        return self.target.path / self.name

    @classmethod
    def create(cls, target: Target, catalog: Catalog) -> Workdir:
        name = PREFIX + secrets.token_hex(4)
        try:
            os.mkdir(name, 0o700, dir_fd=target.fd)
            fd = os.open(name, _OPEN_DIR, dir_fd=target.fd)
        except OSError as exc:
            raise OperationalError(f"cannot write into {target.path}: {exc.strerror}") from None
        info = os.fstat(fd)
        catalog.record_workdir(target.record_key(name), subvolume_id_of(fd), info.st_ino)
        return cls(target, name, fd, info.st_dev, info.st_ino)

    def subvolumes(self) -> list[str]:
        """Names of the subvolumes directly inside, on the target's filesystem."""
        return sorted(
            name
            for name, info in _listing(self.fd)
            if stat.S_ISDIR(info.st_mode)
            and info.st_ino == _SUBVOLUME_ROOT_INODE
            and self._on_target_filesystem(name)
        )

    def _on_target_filesystem(self, name: str) -> bool:
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=self.fd)
        except OSError:
            return False
        try:
            return filesystem_id(fd, name) == self.target.fsid
        finally:
            os.close(fd)

    def delete_subvolume(self, name: str) -> None:
        """Delete the subvolume ``name`` inside; refuses anything that is not one."""
        if name not in self.subvolumes():
            raise OperationalError(f"refusing to delete {self.path / name}: not a subvolume here")
        try:
            delete_subvolume(fd_path(self.fd, name))
        except OSError as exc:
            raise OperationalError(f"cannot delete {self.path / name}: {exc.strerror}") from None

    def remove(self, catalog: Catalog) -> None:
        """Delete every subvolume inside, then the directory if nothing else is left."""
        log = get_logger()
        try:
            for name in self.subvolumes():
                self.delete_subvolume(name)
            rest = [name for name, _ in _listing(self.fd)]
            if rest:
                # Nothing but subvolumes is ever put here: whatever else this is, it stays.
                log.warning(
                    "restore.cleanup_incomplete",
                    path=str(self.path),
                    left=sorted(rest)[:10],
                    detail="left alone; delete it by hand once you know what it is",
                )
                return
            here = os.stat(self.name, dir_fd=self.target.fd, follow_symlinks=False)
            if (here.st_dev, here.st_ino) == (self.device, self.inode):
                os.rmdir(self.name, dir_fd=self.target.fd)
            catalog.forget_workdir(self.target.record_key(self.name))
        except (OSError, OperationalError) as exc:
            log.warning(
                "restore.cleanup_failed",
                path=str(self.path),
                error=str(exc),
                detail="delete it by hand (as root)",
            )
        finally:
            os.close(self.fd)


def _leftover(target: Target, catalog: Catalog, name: str) -> Workdir | None:
    """The working directory ``name`` left by a dead restore, if it provably is one."""
    recorded = catalog.workdir(target.record_key(name))
    try:
        fd = os.open(name, _OPEN_DIR, dir_fd=target.fd)
    except OSError:
        return None  # a symlink (O_NOFOLLOW), a file, or gone
    info = os.fstat(fd)
    ours = (
        recorded == (subvolume_id_of(fd), info.st_ino)
        and info.st_uid == 0
        and stat.S_IMODE(info.st_mode) == 0o700
    )
    if not ours:
        os.close(fd)
        return None
    return Workdir(target, name, fd, info.st_dev, info.st_ino)


def _empty_and_private(target: Target, name: str, info: os.stat_result) -> bool:
    """Remove ``name`` if it is an empty directory of root's that only root can enter;
    whether it was removed.  ``rmdir`` never removes anything else."""
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or stat.S_IMODE(info.st_mode) != 0o700:
        return False
    try:
        os.rmdir(name, dir_fd=target.fd)
    except OSError:
        return False
    return True


def remove_leftovers(target: Target, catalog: Catalog) -> None:
    """Remove the working directories killed restores left in ``target``, and only those."""
    log = get_logger()
    for name, info in _listing(target.fd):
        if not name.startswith(PREFIX):
            continue
        leftover = _leftover(target, catalog, name)
        if leftover is None and _empty_and_private(target, name, info):
            # Made by a restore killed before it could record it: root's, private, and
            # with nothing in it that could be anyone's.
            log.warning("restore.leftover_removed", path=str(target.path / name))
            continue
        if leftover is None:
            log.warning(
                "restore.leftover_ignored",
                path=str(target.path / name),
                detail="named like a restore's working directory, but not one this host's "
                "btrsendd created; left alone",
            )
            continue
        log.warning("restore.leftover_removed", path=str(leftover.path))
        leftover.remove(catalog)

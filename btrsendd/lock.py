"""Locks on the state directory.

Two processes planning and uploading for the same catalog would both decide that a backup is
due and both upload it, so every change of state runs under ``<state_dir>/lock``; the daemon
also holds ``<state_dir>/daemon.lock`` for its whole life, so a second daemon refuses to start,
and a restore holds ``<state_dir>/restore-<hash of the target>.lock`` while it writes there.
An ``flock`` is released by the kernel when its holder dies: a crashed process never leaves a
stale lock behind.  Each lock file names its holder, for the message the next one gets.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from btrsendd.errors import BtrsenddError, OperationalError, UsageError
from btrsendd.permissions import open_state_dir

LOCK_FILE = "lock"
DAEMON_LOCK_FILE = "daemon.lock"


@contextmanager
def _held(path: Path, holder: str, busy: Callable[[str], BtrsenddError]) -> Iterator[None]:
    """Hold an exclusive flock on ``path``, recording ``holder``; ``busy(current)`` if taken."""
    # Before the lock file is opened as root: a state directory someone else controls could
    # hold a symlink in its place, and a read-only one deserves a clear message.
    open_state_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise busy(current or "another process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def state_lock(state_dir: Path, purpose: str) -> AbstractContextManager[None]:
    """Hold the state directory's lock for the block, or fail at once naming the holder."""
    return _held(
        state_dir / LOCK_FILE,
        f"btrsendd {purpose} (pid {os.getpid()})",
        lambda current: OperationalError(
            f"{state_dir} is in use by {current}; wait for it to finish "
            "(or use `btrsendd trigger` to ask a running daemon for a backup)"
        ),
    )


def daemon_lock(state_dir: Path) -> AbstractContextManager[None]:
    """Hold ``daemon.lock`` for the daemon's life; a second daemon is a setup mistake (2)."""
    return _held(
        state_dir / DAEMON_LOCK_FILE,
        f"btrsendd run (pid {os.getpid()})",
        lambda current: UsageError(
            f"another btrsendd daemon ({current}) is already running on {state_dir}; stop it "
            "first (systemctl stop btrsendd), or ask it for a backup with `btrsendd trigger`"
        ),
    )


def restore_lock(state_dir: Path, target: str) -> AbstractContextManager[None]:
    """One restore at a time into ``target`` (its real path) with this state directory.

    The working directories recorded in this catalog that a restore finds in its target are
    then a dead restore's, safe to remove.  Locked here, not on the target itself: anyone who
    can read a shared target could hold a lock on it, and stop every restore into it.
    """
    digest = hashlib.sha256(os.fsencode(target)).hexdigest()[:16]
    return _held(
        state_dir / f"restore-{digest}.lock",
        f"btrsendd restore (pid {os.getpid()})",
        lambda current: OperationalError(
            f"{current} is writing into {target}; wait for it to finish"
        ),
    )


def backup_running(state_dir: Path) -> bool:
    """Whether some btrsendd holds the state directory's lock right now (a backup, expiry,
    forget, ...): for reports that must not call its work in progress a leftover."""
    try:
        with state_lock(state_dir, "a check"):
            return False
    except (OperationalError, OSError):
        return True  # taken, or not takeable here: assume the worst

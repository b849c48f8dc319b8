"""One writer per state directory.

Two processes planning and uploading for the same catalog would both decide that a backup is
due and both upload it.  An ``flock`` on ``<state_dir>/lock`` is released by the kernel when
its holder dies, so a crashed process never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from btrsendd.errors import OperationalError

LOCK_FILE = "lock"


@contextmanager
def state_lock(state_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the state directory's lock for the block, or fail at once naming the holder."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise OperationalError(
                f"{state_dir} is in use by {holder}; wait for it to finish "
                "(or use `btrsendd trigger` to ask a running daemon for a backup)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"btrsendd {purpose} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)

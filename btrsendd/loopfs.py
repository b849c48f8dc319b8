"""A throwaway file system on a loop device: ``verify --deep`` restores into a btrfs one.

The tests, the demo and the benchmarks build their filesystems with the same context manager,
so there is one place that knows how to set one up and, above all, how to always take it down
again (a lazy unmount when something still holds a file open; ``mount -o loop`` releases its
loop device with the last unmount).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from btrsendd.errors import OperationalError


def _run(argv: Sequence[str]) -> None:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True)
    except FileNotFoundError:
        raise OperationalError(
            f"{argv[0]} not found on PATH: install it (btrfs-progs, e2fsprogs)"
        ) from None
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
        raise OperationalError(f"{' '.join(argv)} failed: {detail}")


@contextmanager
def loop_filesystem(image: Path, mnt: Path, size: int, mkfs: Sequence[str]) -> Iterator[Path]:
    """Make a sparse ``size``-byte image, run ``mkfs`` (an argument list, the image appended)
    on it and mount it at ``mnt``.

    Yields ``mnt``; afterwards the filesystem is unmounted and the image deleted, whatever
    happened inside.
    """
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        with image.open("wb") as f:
            f.truncate(size)
        _run([*mkfs, str(image)])
        _run(["mount", "-o", "loop", str(image), str(mnt)])
        try:
            yield mnt
        finally:
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    finally:
        image.unlink(missing_ok=True)


def loop_btrfs(image: Path, mnt: Path, size: int) -> AbstractContextManager[Path]:
    """A throwaway btrfs (``loop_filesystem`` with ``mkfs.btrfs``)."""
    return loop_filesystem(image, mnt, size, ("mkfs.btrfs", "-q", "-f"))

"""The worlds the permission tests attack.

Attacks are made for real: the local user is ``nobody`` (``setpriv --reuid=65534``), the
keys are real gpg keys, and what is checked is the outcome (who can decrypt a stored volume,
who can read a snapshot), not the calls made.  ``tmp_path`` lies under a root-only directory,
which would hide everything from ``nobody`` whatever btrsendd did, so the attacks happen in
``open_place``: a directory under /tmp that everyone can enter.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrsendd.loopfs import loop_btrfs
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.world import World, local_world, make_world


@pytest.fixture
def open_place() -> Iterator[Path]:
    """A directory under /tmp that every user can enter (mode 0755, owned by root)."""
    place = Path(tempfile.mkdtemp(prefix="btrsendd-open-", dir="/tmp"))
    place.chmod(0o755)
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src", size="300M"), tmp_path, gpg_key)
    (w.source / "file.txt").write_text("data\n")
    return w


@pytest.fixture
def open_world(open_place: Path, gpg_key: GpgKey, tmp_path: Path) -> Iterator[World]:
    """A world whose btrfs is mounted where every user can reach it."""
    with loop_btrfs(tmp_path / "open.img", open_place / "fs", 300 * 1024**2) as root:
        root.chmod(0o755)
        yield make_world(
            root, tmp_path, gpg_key, f'backend = "local"\npath = "{tmp_path / "archive"}"'
        )

"""Fixtures the scenario tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support.lockworld import LockWorlds, make_lock_world


@pytest.fixture
def lock_world(
    seaweedfs_server: S3Server, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> LockWorlds:
    """``lock_world("governance", lifetime=30)``: a world on a fresh SeaweedFS bucket."""
    return make_lock_world(seaweedfs_server, make_btrfs, gpg_key, tmp_path)

"""The small world the command-line tests run the real ``btrsendd`` in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.world import World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    return local_world(make_btrfs("src"), tmp_path, gpg_key)

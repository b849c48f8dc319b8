"""Fixtures the pipeline tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.btrfs import make_subvolume


@pytest.fixture
def source(btrfs_fs: Path) -> Path:
    """A subvolume with one file in it, on a fresh btrfs."""
    src = make_subvolume(btrfs_fs / "src")
    (src / "file.txt").write_text("hello\n")
    return src

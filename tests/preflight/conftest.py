"""The sound machine every check-config test starts from: a btrfs source subvolume, a private
state directory and configuration file, a real gpg keyring and a local archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.btrfs import make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.preflight.helpers import Setup


@pytest.fixture
def setup(tmp_path: Path, btrfs_fs: Path, gpg_key: GpgKey) -> Setup:
    source = make_subvolume(btrfs_fs / "home")
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    file = tmp_path / "btrsendd.toml"
    file.write_text("# contents are not read by check()\n")
    file.chmod(0o600)
    data: dict[str, Any] = {
        "state_dir": str(state_dir),
        "encryption": {
            "recipients": [gpg_key.fingerprint],
            "gnupg_home": str(gpg_key.public_home),
        },
        "storage": {"backend": "local", "path": str(tmp_path / "archive")},
        "sources": [
            {"name": "home", "path": str(source), "snapshot_dir": str(source / ".btrsendd")}
        ],
    }
    return Setup(data, file, btrfs_fs)

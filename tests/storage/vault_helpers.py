"""What the vault backend's tests share: a backend on a fresh vault of the test server
(``tests/fixtures/vaultserver.py``), waiting for a retrieval job, and the key they store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from btrsendd.storage.vault.archives import MiB
from btrsendd.storage.vault.storage import VaultStorage
from tests.fixtures.vaultserver import VaultServer

KEY = "host1/data/2000-01-01-full-abc123/vol-00000.btrfs.zst.gpg"


def storage_on(server: VaultServer, tmp_path: Path, **options: Any) -> VaultStorage:
    """A backend on a fresh vault of the test server: 1 MiB parts and ranges, quick retries
    that give up within half a second."""
    settings: dict[str, Any] = {
        "volume_size": 8 * MiB,
        "part_size": MiB,
        "read_range": MiB,
        "retry_delay": 0.01,
        "retry_budget": 0.5,
        **options,
    }
    name = settings.pop("vault", None) or server.new_vault()
    index = settings.pop("index_path", None) or tmp_path / f"vault-{name}.db"
    return VaultStorage(name, index_path=index, endpoint_url=server.endpoint_url, **settings)


def thawed(storage: VaultStorage, key: str, timeout: float = 30) -> None:
    """Request a retrieval and wait until the job is done."""
    storage.request_thaw(key, "Expedited", 1)
    deadline = time.monotonic() + timeout
    while storage.thaw_state(key) != "readable":
        assert time.monotonic() < deadline, f"{key} never became readable"
        time.sleep(0.05)

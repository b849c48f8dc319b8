"""The ``glacier-vault`` backend: a legacy Glacier vault as object storage (``storage.py``).

Its keys are ``storage.vault`` and ``region`` (and ``endpoint_url``); it keeps its key ->
archive index in the state directory.  ``check-config`` checks the vault's own rules
(``checks.py``).  boto3 is imported only when the backend is opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from btrsendd.errors import UsageError
from btrsendd.pricing import MINIMUM_STORAGE_DAYS
from btrsendd.storage.base import MinimumDuration, Storage

if TYPE_CHECKING:
    from btrsendd.config import PipelineConfig, SourceConfig, StorageConfig
    from btrsendd.findings import Finding


_NEEDS_VAULT = 'backend "glacier-vault" needs storage.vault = "<vault name>"'


class GlacierVault:
    """The glacier-vault backend as the registry knows it (``base.Backend``)."""

    name = "glacier-vault"
    locks = False

    def config_problem(self, cfg: StorageConfig) -> str | None:
        return None if cfg.vault else _NEEDS_VAULT

    def open(self, cfg: StorageConfig, pipeline: PipelineConfig, state_dir: Path | None) -> Storage:
        if not cfg.vault:
            raise UsageError(_NEEDS_VAULT)
        if state_dir is None:
            raise ValueError("open_storage needs state_dir for the glacier-vault backend")
        from btrsendd.storage.throttle import Throttle
        from btrsendd.storage.vault.storage import VaultStorage

        return VaultStorage(
            cfg.vault,
            index_path=state_dir / f"vault-{cfg.region}-{cfg.vault}.db",
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            volume_size=pipeline.volume_size,
            part_size=pipeline.part_size,
            concurrency=pipeline.concurrency,
            retry_budget=cfg.retry_budget,
            throttle=Throttle(pipeline.rate_limit),
        )

    def findings(self, cfg: StorageConfig, sources: Sequence[SourceConfig]) -> list[Finding]:
        from btrsendd.storage.vault.checks import vault_rules

        return vault_rules(cfg, sources)

    def minimum_duration(self, cfg: StorageConfig) -> MinimumDuration | None:
        from btrsendd.storage.vault.archives import STORAGE_CLASS

        days = MINIMUM_STORAGE_DAYS[STORAGE_CLASS]
        return MinimumDuration(days, "Glacier vaults", switch='backend = "s3" with ')

    def archive_directory(self, cfg: StorageConfig) -> Path | None:
        return None


BACKEND = GlacierVault()

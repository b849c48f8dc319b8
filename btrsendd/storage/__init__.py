"""Storage backends behind one interface (see ``base.py``)."""

from __future__ import annotations

from pathlib import Path

from btrsendd.config import PipelineConfig, StorageConfig
from btrsendd.errors import UsageError
from btrsendd.storage.base import Storage


def open_storage(
    cfg: StorageConfig, pipeline: PipelineConfig, state_dir: Path | None = None
) -> Storage:
    """Build the configured backend.  Imports are local so the local backend never needs boto3.

    The multipart tuning lives in ``[pipeline]`` because it trades memory against throughput
    like the rest of the pipeline does.  ``state_dir`` holds the glacier-vault backend's
    key -> archive index (vaults have no keys of their own); the other backends ignore it.
    """
    if cfg.backend == "local":
        if cfg.path is None:
            raise UsageError('storage.backend = "local" needs storage.path')
        from btrsendd.storage.local import LocalStorage

        return LocalStorage(cfg.path)
    if cfg.backend == "s3":
        if not cfg.bucket:
            raise UsageError('storage.backend = "s3" needs storage.bucket')
        from btrsendd.storage.s3 import S3Storage

        return S3Storage(
            cfg.bucket,
            storage_class=cfg.storage_class,
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            part_size=pipeline.part_size,
            concurrency=pipeline.concurrency,
            retry_budget=cfg.retry_budget,
        )
    if cfg.backend == "glacier-vault":
        if not cfg.vault:
            raise UsageError('storage.backend = "glacier-vault" needs storage.vault')
        if state_dir is None:
            raise ValueError("open_storage needs state_dir for the glacier-vault backend")
        from btrsendd.storage.vault import VaultStorage

        return VaultStorage(
            cfg.vault,
            index_path=state_dir / f"vault-{cfg.region}-{cfg.vault}.db",
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            volume_size=pipeline.volume_size,
            part_size=pipeline.part_size,
            concurrency=pipeline.concurrency,
            retry_budget=cfg.retry_budget,
        )
    raise UsageError(f'storage.backend = "{cfg.backend}" is not known; use "s3" or "local"')

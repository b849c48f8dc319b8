"""The ``s3`` backend: S3 and S3-compatible object storage (``bucket.py``).

Its keys are ``storage.bucket``, ``storage_class``, ``region`` and ``endpoint_url``;
``check-config`` warns about cold classes on S3-compatible servers (``checks.py``).  boto3 is
imported only when the backend is opened.
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


_NEEDS_BUCKET = 'backend "s3" needs storage.bucket = "<bucket name>"'


class S3:
    """The S3 backend as the registry knows it (``base.Backend``)."""

    name = "s3"
    locks = True

    def config_problem(self, cfg: StorageConfig) -> str | None:
        return None if cfg.bucket else _NEEDS_BUCKET

    def open(self, cfg: StorageConfig, pipeline: PipelineConfig, state_dir: Path | None) -> Storage:
        if not cfg.bucket:
            raise UsageError(_NEEDS_BUCKET)
        from btrsendd.storage.s3 import bucket
        from btrsendd.storage.throttle import Throttle

        return bucket.S3Storage(
            cfg.bucket,
            storage_class=cfg.storage_class,
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            part_size=pipeline.part_size,
            concurrency=pipeline.concurrency,
            retry_budget=cfg.retry_budget,
            object_lock=cfg.object_lock != "off",
            throttle=Throttle(pipeline.rate_limit),
        )

    def findings(self, cfg: StorageConfig, sources: Sequence[SourceConfig]) -> list[Finding]:
        from btrsendd.storage.s3.checks import compatible_endpoint

        return compatible_endpoint(cfg)

    def minimum_duration(self, cfg: StorageConfig) -> MinimumDuration | None:
        days = MINIMUM_STORAGE_DAYS.get(cfg.storage_class)
        return None if days is None else MinimumDuration(days, cfg.storage_class)

    def archive_directory(self, cfg: StorageConfig) -> Path | None:
        return None


BACKEND = S3()

"""The ``local`` backend: a directory as object storage (``directory.py``).

For demos, tests and NAS targets.  Its one key is ``storage.path``; ``check-config`` looks at
that directory (``checks.py``), and ``placement.py`` keeps it out of the sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from btrsendd.errors import UsageError
from btrsendd.storage.base import MinimumDuration, Storage

if TYPE_CHECKING:
    from btrsendd.config import PipelineConfig, SourceConfig, StorageConfig
    from btrsendd.findings import Finding


_NEEDS_PATH = 'backend "local" needs storage.path = "/some/archive/dir"'


class Local:
    """The local backend as the registry knows it (``base.Backend``)."""

    name = "local"
    locks = False

    def config_problem(self, cfg: StorageConfig) -> str | None:
        return _NEEDS_PATH if cfg.path is None else None

    def open(self, cfg: StorageConfig, pipeline: PipelineConfig, state_dir: Path | None) -> Storage:
        if cfg.path is None:
            raise UsageError(_NEEDS_PATH)
        from btrsendd.storage.local.directory import LocalStorage
        from btrsendd.storage.throttle import Throttle

        return LocalStorage(cfg.path, Throttle(pipeline.rate_limit))

    def findings(self, cfg: StorageConfig, sources: Sequence[SourceConfig]) -> list[Finding]:
        from btrsendd.storage.local.checks import archive_path

        return archive_path(cfg)

    def minimum_duration(self, cfg: StorageConfig) -> MinimumDuration | None:
        return None  # a disk bills nothing for deleting

    def archive_directory(self, cfg: StorageConfig) -> Path | None:
        return cfg.path


BACKEND = Local()

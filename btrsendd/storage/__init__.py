"""Storage backends behind one interface (``base.py``), found by their configuration name.

Each backend is a package of its own (``local/``, ``s3/``, ``vault/``) holding the backend,
the checks of its ``[storage]`` keys and its ``check-config`` findings; its ``__init__``
describes it to this registry (``base.Backend``) and imports the backend itself only when it
is opened, so that loading a configuration never imports an AWS library.  Adding a backend
is adding a package, one line below, and its name to ``storage.backend``'s choices in
``config.py`` (``tests/storage/test_contract.py`` checks that the two agree, and runs the
contract on every backend).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from btrsendd.errors import UsageError
from btrsendd.storage import local, s3, vault
from btrsendd.storage.base import Backend, Storage

if TYPE_CHECKING:
    from btrsendd.config import PipelineConfig, StorageConfig

#: Every backend by its ``storage.backend`` name.
BACKENDS: Mapping[str, Backend] = {b.name: b for b in (s3.BACKEND, vault.BACKEND, local.BACKEND)}


def backend_of(cfg: StorageConfig) -> Backend:
    """The backend ``cfg`` names."""
    try:
        return BACKENDS[cfg.backend]
    except KeyError:
        known = " or ".join(f'"{name}"' for name in BACKENDS)
        raise UsageError(f'storage.backend = "{cfg.backend}" is not known; use {known}') from None


def open_storage(
    cfg: StorageConfig, pipeline: PipelineConfig, state_dir: Path | None = None
) -> Storage:
    """Build the configured backend.

    The multipart tuning lives in ``[pipeline]`` because it trades memory against throughput
    like the rest of the pipeline does.  ``state_dir`` holds what a backend keeps on this
    machine (the glacier-vault backend's key -> archive index: vaults have no keys of their
    own); the other backends ignore it.
    """
    return backend_of(cfg).open(cfg, pipeline, state_dir)

"""``check-config``'s findings about the local backend's directory."""

from __future__ import annotations

from btrsendd.config import StorageConfig
from btrsendd.findings import Finding, error, warning


def archive_path(storage: StorageConfig) -> list[Finding]:
    """``storage.path`` is a directory, or can become one: a missing parent is likely a typo."""
    path = storage.path
    if path is None:
        return []
    if path.exists() and not path.is_dir():
        return [error("storage.path", f"{path} is not a directory; fix storage.path")]
    if not path.exists() and not path.parent.is_dir():
        return [
            warning(
                "storage.path",
                f"neither {path} nor its parent exists; they are created on first use, so "
                "check the path for typos",
            )
        ]
    return []

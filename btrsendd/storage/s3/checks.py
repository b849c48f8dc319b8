"""``check-config``'s findings about the s3 backend's settings."""

from __future__ import annotations

from btrsendd.config import StorageConfig
from btrsendd.findings import Finding, warning

_COLD_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def compatible_endpoint(storage: StorageConfig) -> list[Finding]:
    """S3-compatible servers rarely implement cold classes or restore requests."""
    if storage.endpoint_url is None or storage.storage_class not in _COLD_CLASSES:
        return []
    return [
        warning(
            "storage.storage_class",
            f"{storage.storage_class} with endpoint_url {storage.endpoint_url}: S3-compatible "
            "servers (MinIO, SeaweedFS, ...) usually lack cold classes and refuse restore "
            'requests; use storage_class = "STANDARD" unless the server supports them',
        )
    ]

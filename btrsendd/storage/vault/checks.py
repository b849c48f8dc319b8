"""``check-config``'s findings about the glacier-vault backend's settings: the vault's own
rules, checked before the first upload runs into them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from btrsendd.config import SourceConfig, StorageConfig
from btrsendd.findings import Finding, error
from btrsendd.layout import Layout
from btrsendd.storage.vault.archives import archive_description

_VAULT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


def vault_rules(storage: StorageConfig, sources: Sequence[SourceConfig]) -> list[Finding]:
    """Vault names are AWS's alphabet; the region must be one where the vault service exists
    (an endpoint_url, as in tests, names its own); and each archive's description, which
    carries its object key so the index can be rebuilt from an inventory, must fit in 1,024
    characters whatever the prefix and source names make of the key.
    """
    if storage.vault is None:
        return []
    findings = []
    if not _VAULT_NAME_RE.match(storage.vault):
        findings.append(
            error(
                "storage.vault",
                f"{storage.vault!r} is not a vault name: 1-255 letters, digits, '_', '-' or "
                "'.'; copy the name from `aws glacier list-vaults --account-id -`",
            )
        )
    if storage.endpoint_url is None and storage.region not in _glacier_regions():
        findings.append(
            error(
                "storage.region",
                f"{storage.region!r} has no Glacier vault service; set the region the vault "
                "lives in (its ARN names it)",
            )
        )
    for src in sources:
        try:
            archive_description(Layout(storage.prefix).longest_key(src.name))
        except ValueError as exc:
            findings.append(error("storage.prefix", str(exc)))
            break
    return findings


def _glacier_regions() -> set[str]:
    """The regions botocore knows to offer the Glacier vault service, in every partition."""
    import boto3

    session = boto3.session.Session()
    return {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("glacier", partition_name=partition)
    }

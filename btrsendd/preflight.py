"""The machine checks behind ``btrsendd check-config``.

``config.py`` decides whether the file is well-formed; this module decides whether this
machine can run it: sources are subvolumes, snapshots can be taken where configured and are
part of no backup, the keyring can encrypt to the recipients (``gpg.py``), the programs
exist, nothing btrsendd trusts can be read or changed by the wrong people
(``permissions.py``), the schedule fires (``cron.py``), nested subvolumes are not silently
left out (``placement.py``), and the schedule does not pay cold storage for deleting early.
Every finding names the TOML key to change and how, because check-config is run exactly when
someone is editing the file.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from btrsendd import btrfs, cron, gpg, permissions, placement
from btrsendd.config import (
    Config,
    PipelineConfig,
    ScheduleConfig,
    SourceConfig,
    StorageConfig,
)
from btrsendd.errors import BtrsenddError, ConfigError
from btrsendd.findings import Finding, error, private_dir, warning
from btrsendd.pricing import MINIMUM_STORAGE_DAYS

VAULT_MINIMUM_STORAGE_DAYS = MINIMUM_STORAGE_DAYS["GLACIER_VAULT"]
#: Classes to suggest instead, coldest (cheapest to keep) first.
_COLDEST_FIRST = ("DEEP_ARCHIVE", "GLACIER", "GLACIER_IR", "STANDARD_IA", "STANDARD")


def check(config: Config, *, check_storage: Callable[[], None] | None = None) -> list[Finding]:
    """Every finding for ``config`` on this machine, in the order of the file's sections.

    ``check_storage`` probes the storage backend (credentials, bucket, permissions); it is
    passed in so this module stays free of network code and testable without a server.
    """
    findings = _config_file(config.source_file)
    findings += _state_dir(config.state_dir)
    findings += _schedule(config.schedule)
    findings += _early_deletion(config.schedule, config.storage)
    findings += _compressor(config.pipeline)
    findings += gpg.check_keyring(config.encryption)
    findings += _local_storage(config.storage)
    findings += _glacier_vault(config.storage, config.sources)
    findings += _compatible_endpoint(config.storage)
    findings += _sources(config.sources)
    findings += placement.inside_problems(config)
    findings += placement.nested_problems(config)
    if check_storage is not None:
        try:
            check_storage()
        except BtrsenddError as exc:
            findings.append(error("storage", str(exc)))
    return findings


def format_findings(findings: Sequence[Finding]) -> list[str]:
    """One line per finding: ``level: key: message``."""
    return [f"{f.level}: {f.key}: {f.message}" for f in findings]


def _config_file(path: Path | None) -> list[Finding]:
    problem = None if path is None else permissions.config_file_problem(path)
    return [] if problem is None else [Finding(problem.level, str(path), problem.message)]


def _state_dir(path: Path) -> list[Finding]:
    """Private, and writable: every command records what it does there."""
    findings = private_dir("state_dir", path, permissions.STATE_DIR)
    if findings:
        return findings
    # A missing state_dir is created (with its parents) by the first command.
    existing = next(p for p in (path, *path.parents) if p.exists())
    problem = permissions.unwritable(existing)
    if problem is None:
        return []
    where = path if existing == path else f"{existing} (where {path} would be created)"
    return [error("state_dir", f"{where} {problem}, or set state_dir to a writable directory")]


def _schedule(schedule: ScheduleConfig) -> list[Finding]:
    """The very trigger the daemon runs: one that cannot be built or never fires is refused."""
    try:
        cron.cron_trigger(schedule.cron)
    except ConfigError as exc:
        return [error("schedule.cron", str(exc))]
    return []


def _sources(sources: Sequence[SourceConfig]) -> list[Finding]:
    findings: list[Finding] = []
    if shutil.which("btrfs") is None:
        findings.append(
            error(
                "sources",
                "the btrfs command is not installed (btrsendd runs `btrfs send`); "
                "install btrfs-progs",
            )
        )
    owners: dict[Path, SourceConfig] = {}
    for index, src in enumerate(sources):
        findings += _source(index, src)
        other = owners.setdefault(src.snapshot_dir, src)
        if other is not src:
            findings.append(
                error(
                    f"sources[{index}].snapshot_dir (name = {src.name!r})",
                    f"{src.snapshot_dir} is also the snapshot_dir of source {other.name!r}; "
                    "snapshots are named by date only, so each source needs its own directory",
                )
            )
    return findings


def _source(index: int, src: SourceConfig) -> list[Finding]:
    """The source must be a subvolume and its snapshots must land on the same filesystem."""
    path_key = f"sources[{index}].path (name = {src.name!r})"
    dir_key = f"sources[{index}].snapshot_dir (name = {src.name!r})"
    example = src.path / ".btrsendd"
    shape = _snapshot_dir_shape(dir_key, src.snapshot_dir)
    try:
        btrfs.require_subvolume(src.path)
    except BtrsenddError as exc:
        return [error(path_key, str(exc)), *shape]
    if any(f.level == "error" for f in shape):
        return shape
    try:
        same = btrfs.same_filesystem(src.path, src.snapshot_dir)
    except BtrsenddError as exc:
        return [*shape, error(dir_key, str(exc))]
    if not same:
        return [
            *shape,
            error(
                dir_key,
                f"{src.snapshot_dir} is on another filesystem than {src.path}; btrfs can only "
                f"snapshot within one filesystem: use a directory on it, e.g. {example}",
            ),
        ]
    return shape


def _snapshot_dir_shape(key: str, snapshot_dir: Path) -> list[Finding]:
    """snapshot_dir is created on first use (0700), but not its parent: a missing parent is
    a typo.  Snapshots hold every file of the source: nobody else may enter it."""
    if not snapshot_dir.exists() and not snapshot_dir.parent.is_dir():
        return [
            error(
                key,
                f"the parent directory {snapshot_dir.parent} does not exist; create it or fix "
                "snapshot_dir",
            )
        ]
    return private_dir(key, snapshot_dir, permissions.SNAPSHOT_DIR)


def _compressor(pipeline: PipelineConfig) -> list[Finding]:
    key = "pipeline.compression"
    if pipeline.compression == "gzip" and not (shutil.which("pigz") or shutil.which("gzip")):
        return [error(key, "neither pigz nor gzip is installed; install pigz (or gzip)")]
    if pipeline.compression == "zstd" and not shutil.which("zstd"):
        return [error(key, 'zstd is not installed; install zstd or set compression = "gzip"')]
    return []


def _local_storage(storage: StorageConfig) -> list[Finding]:
    if storage.backend != "local" or storage.path is None:
        return []
    path = storage.path
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


_COLD_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def _compatible_endpoint(storage: StorageConfig) -> list[Finding]:
    """S3-compatible servers rarely implement cold classes or restore requests."""
    if storage.backend != "s3" or storage.endpoint_url is None:
        return []
    if storage.storage_class not in _COLD_CLASSES:
        return []
    return [
        warning(
            "storage.storage_class",
            f"{storage.storage_class} with endpoint_url {storage.endpoint_url}: S3-compatible "
            "servers (MinIO, SeaweedFS, ...) usually lack cold classes and refuse restore "
            'requests; use storage_class = "STANDARD" unless the server supports them',
        )
    ]


_VAULT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


def _glacier_vault(storage: StorageConfig, sources: Sequence[SourceConfig]) -> list[Finding]:
    """The vault's own rules, checked before the first upload runs into them.

    Vault names are AWS's alphabet; the region must be one where the vault service exists
    (an endpoint_url, as in tests, names its own); and each archive's description, which
    carries its object key so the index can be rebuilt from an inventory, must fit in 1,024
    characters whatever the prefix and source names make of the key.
    """
    if storage.backend != "glacier-vault" or storage.vault is None:
        return []
    from btrsendd.layout import Layout
    from btrsendd.storage.vault import archive_description

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


def average_backup_gap(backup_days: Sequence[int]) -> float:
    """Mean days between backups for these days of the month.

    Counted over four real years (one leap year), so days 29-31, which some months lack,
    weigh as often as they actually occur.
    """
    start = dt.date(2001, 1, 1)
    span = (dt.date(2005, 1, 1) - start).days
    wanted = set(backup_days)
    count = sum(1 for n in range(span) if (start + dt.timedelta(days=n)).day in wanted)
    return span / count


def _early_deletion(schedule: ScheduleConfig, storage: StorageConfig) -> list[Finding]:
    """Warn when chains expire before the storage class's minimum duration.

    A chain's full backup is stored from its first day until the chain expires: the chain's
    span (``max_incrementals`` gaps) plus ``chain_lifetime_days``.  Deleting it sooner is
    billed up to the minimum anyway.
    """
    if storage.backend == "glacier-vault":
        minimum, where = VAULT_MINIMUM_STORAGE_DAYS, "Glacier vaults"
    elif storage.backend == "s3" and storage.storage_class in MINIMUM_STORAGE_DAYS:
        minimum = MINIMUM_STORAGE_DAYS[storage.storage_class]
        where = storage.storage_class
    else:
        return []
    gap = average_backup_gap(schedule.backup_days)
    span = gap * schedule.max_incrementals
    stored = schedule.chain_lifetime_days + span
    if stored >= minimum:
        return []
    needed = math.ceil(minimum - span)
    fitting = next(c for c in _COLDEST_FIRST if MINIMUM_STORAGE_DAYS.get(c, 0) <= stored)
    alternative = f'storage_class = "{fitting}"'
    if storage.backend == "glacier-vault":
        alternative = f'backend = "s3" with {alternative}'
    return [
        warning(
            "schedule.chain_lifetime_days",
            f"a chain's full backup is stored about {stored:.0f} days "
            f"({schedule.chain_lifetime_days} chain_lifetime_days + {span:.0f} days for "
            f"{schedule.max_incrementals} incrementals {gap:.1f} days apart), less than the "
            f"{minimum}-day minimum of {where}, which bills early deletion as if kept "
            f"{minimum} days; raise chain_lifetime_days to {needed} or choose {alternative}",
        )
    ]

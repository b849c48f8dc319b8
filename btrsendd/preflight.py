"""The machine checks behind ``btrsendd check-config``.

``config.py`` decides whether the file is well-formed; this module decides whether this
machine can run it: sources are subvolumes, snapshots can be taken where configured and are
part of no backup, the keyring can encrypt to the recipients (``gpg.py``), the programs
exist, nothing btrsendd trusts can be read or changed by the wrong people
(``permissions.py``), the schedule fires (``cron.py``), the storage backend's settings hold
(each backend's ``checks.py``, found through the registry in ``storage/``), nested
subvolumes are not silently left out (``placement.py``), and the schedule does not pay cold
storage for deleting early.
Every finding names the TOML key to change and how, because check-config is run exactly when
someone is editing the file.  A file with mistakes is checked all the same on the parts of it
that are sound (``Parts``), and what could not be checked is named, so that one run says all.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from btrsendd import cron, hooks, permissions, placement
from btrsendd.config import (
    Config,
    EncryptionConfig,
    HooksConfig,
    PipelineConfig,
    ScheduleConfig,
    SourceConfig,
    StorageConfig,
)
from btrsendd.errors import BtrsenddError, ConfigError
from btrsendd.findings import Finding, error, private_dir, warning
from btrsendd.pipeline import btrfs, gpg
from btrsendd.pricing import MINIMUM_STORAGE_DAYS
from btrsendd.storage import backend_of

#: Classes to suggest instead, coldest (cheapest to keep) first.
_COLDEST_FIRST = ("DEEP_ARCHIVE", "GLACIER", "GLACIER_IR", "STANDARD_IA", "STANDARD")


@dataclass(frozen=True)
class Parts:
    """The sections of a configuration the machine checks read: all of them for a valid
    file; for one with mistakes, those that are sound (None for the others), so that one run
    of check-config reports the mistakes and what the machine says about the rest."""

    source_file: Path | None
    state_dir: Path | None = None
    schedule: ScheduleConfig | None = None
    pipeline: PipelineConfig | None = None
    encryption: EncryptionConfig | None = None
    storage: StorageConfig | None = None
    sources: tuple[SourceConfig, ...] | None = None
    hooks: HooksConfig | None = None
    #: The whole configuration, which the placement checks read, when it is valid.
    whole: Config | None = None

    @classmethod
    def of(cls, config: Config) -> Parts:
        return cls(
            config.source_file,
            config.state_dir,
            config.schedule,
            config.pipeline,
            config.encryption,
            config.storage,
            config.sources,
            config.hooks,
            config,
        )

    @classmethod
    def sound(cls, path: Path, intact: dict[str, Any]) -> Parts:
        """The parts of the file at ``path`` that are sound (``config.Validated.intact``)."""
        names = {f.name for f in fields(cls)} - {"source_file", "whole"}
        return cls(path, **{name: value for name, value in intact.items() if name in names})


@dataclass(frozen=True)
class Checked:
    """What the machine checks found, and what they could not check (the parts not sound)."""

    findings: list[Finding]
    skipped: list[str]


def check(config: Config, *, check_storage: Callable[[], None] | None = None) -> list[Finding]:
    """Every finding for ``config`` on this machine, in the order of the file's sections.

    ``check_storage`` probes the storage backend (credentials, bucket, permissions); it is
    passed in so this module stays free of network code and testable without a server.
    """
    return check_parts(Parts.of(config), check_storage=check_storage).findings


def check_parts(p: Parts, *, check_storage: Callable[[], None] | None = None) -> Checked:
    """``check`` on what there is: each check runs if the parts it reads are sound."""
    skipped: list[str] = []

    def skip(what: str) -> list[Finding]:
        skipped.append(what)
        return []

    schedule, storage, sources = p.schedule, p.storage, p.sources
    findings = _config_file(p.source_file)
    findings += _state_dir(p.state_dir) if p.state_dir else skip("state_dir")
    findings += _schedule(schedule) if schedule else skip("the schedule")
    findings += (
        _early_deletion(schedule, storage) + _compliance(schedule, storage)
        if schedule and storage
        else skip("early deletion and Object Lock")
    )
    findings += _compressor(p.pipeline) if p.pipeline else skip("the compressor")
    findings += gpg.check_keyring(p.encryption) if p.encryption else skip("the keyring")
    findings += (
        backend_of(storage).findings(storage, sources)
        if storage and sources
        else skip("the storage settings")
    )
    findings += _sources(sources) if sources else skip("the sources")
    findings += hooks.findings(p.hooks) if p.hooks else skip("the hooks")
    findings += (
        placement.inside_problems(p.whole) + placement.nested_problems(p.whole)
        if p.whole
        else skip("nested subvolumes and what lies inside a source")
    )
    if check_storage is not None:
        try:
            check_storage()
        except BtrsenddError as exc:
            findings.append(error("storage", str(exc)))
    return Checked(findings, skipped)


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


def _compliance(schedule: ScheduleConfig, storage: StorageConfig) -> list[Finding]:
    """Say, before the first object is locked, how long compliance mode will hold it: no one
    can shorten that, and a mistyped lifetime would be paid for in full."""
    if storage.object_lock != "compliance":
        return []
    days = schedule.chain_lifetime_days + storage.object_lock_margin_days
    return [
        warning(
            "storage.object_lock",
            f'"compliance" locks every object for at least {days} days after its chain\'s '
            f"newest backup ({schedule.chain_lifetime_days} chain_lifetime_days + "
            f"{storage.object_lock_margin_days} object_lock_margin_days), and no one, not "
            "even the account's root user, can delete it sooner or shorten that; "
            '"governance" lets an administrator do so',
        )
    ]


def _early_deletion(schedule: ScheduleConfig, storage: StorageConfig) -> list[Finding]:
    """Warn when chains expire before the storage class's minimum duration.

    A chain's full backup is stored from its first day until the chain expires: the chain's
    span (``max_incrementals`` gaps) plus ``chain_lifetime_days``.  Deleting it sooner is
    billed up to the minimum anyway.
    """
    duration = backend_of(storage).minimum_duration(storage)
    if duration is None:
        return []
    minimum = duration.days
    gap = average_backup_gap(schedule.backup_days)
    span = gap * schedule.max_incrementals
    stored = schedule.chain_lifetime_days + span
    if stored >= minimum:
        return []
    needed = math.ceil(minimum - span)
    fitting = next(c for c in _COLDEST_FIRST if MINIMUM_STORAGE_DAYS.get(c, 0) <= stored)
    alternative = f'{duration.switch}storage_class = "{fitting}"'
    return [
        warning(
            "schedule.chain_lifetime_days",
            f"a chain's full backup is stored about {stored:.0f} days "
            f"({schedule.chain_lifetime_days} chain_lifetime_days + {span:.0f} days for "
            f"{schedule.max_incrementals} incrementals {gap:.1f} days apart), less than the "
            f"{minimum}-day minimum of {duration.where}, which bills early deletion as if kept "
            f"{minimum} days; raise chain_lifetime_days to {needed} or choose {alternative}",
        )
    ]

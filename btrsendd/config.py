"""The configuration file: TOML in, a typed and validated ``Config`` out.

Parsing and validation live here, apart from the jobs that use the result (as in zrepl), so
that ``check-config``, the daemon's SIGHUP reload and every command share one definition of
"valid".  Checks that need the machine (is the source a subvolume, is the key in the keyring)
live in ``preflight.py``; this module only reads the file.

Every error names the file, the key and what to do about it, because the person reading it is
usually looking at a unit that failed to start.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from btrsendd.config_errors import example_config, intact, schema_findings
from btrsendd.config_values import AbsolutePath, HookCommand, Rate, Size, validate_cron
from btrsendd.errors import ConfigError
from btrsendd.findings import Finding
from btrsendd.pricing import THAW, TRANSFER_OUT_PER_GB
from btrsendd.storage import backend_of
from btrsendd.storage.endpoint import no_secrets_in_url

DEFAULT_CONFIG_PATH = Path("/etc/btrsendd/btrsendd.toml")
CONFIG_ENV = "BTRSENDD_CONFIG"


class _Section(BaseModel):
    # Unknown keys are errors: a misspelt key silently ignored is a setting the user
    # believes is in force and is not.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Section):
    cron: Annotated[str, AfterValidator(validate_cron)] = "0 0 * * *"
    backup_days: tuple[int, ...] = (1, 7, 14, 21)
    max_incrementals: int = Field(default=11, ge=0, le=1000)
    chain_lifetime_days: int = Field(default=90, ge=1)
    catch_up: bool = True

    @field_validator("backup_days")
    @classmethod
    def _days_in_month(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if not days:
            raise ValueError("list at least one day of the month, e.g. [1, 7, 14, 21]")
        bad = [d for d in days if not 1 <= d <= 31]
        if bad:
            raise ValueError(f"days of the month run from 1 to 31, not {bad}")
        return tuple(sorted(set(days)))


class SnapshotsConfig(_Section):
    keep_days: int = Field(default=60, ge=0)


class PipelineConfig(_Section):
    compression: Literal["gzip", "zstd", "none"] = "gzip"
    level: int | None = Field(default=None, ge=1, le=22)
    volume_size: Size = Field(default=1024**3, ge=1024**2)
    # Multipart tuning; defaults suit a home uplink and keep memory at concurrency x part_size.
    part_size: Size = Field(default=16 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3)
    concurrency: int = Field(default=4, ge=1, le=64)
    # Bytes per second sent to storage, all parts together; None: as fast as the link goes.
    rate_limit: Rate = None

    @model_validator(mode="after")
    def _level_fits_compressor(self) -> PipelineConfig:
        if self.level is not None:
            top = 22 if self.compression == "zstd" else 9
            if self.compression == "none":
                raise ValueError('level has no meaning with compression = "none"; remove it')
            if self.level > top:
                raise ValueError(f"{self.compression} levels run from 1 to {top}")
        return self

    @property
    def effective_level(self) -> int:
        """The level actually used: the configured one, or the compressor's usual default."""
        if self.level is not None:
            return self.level
        return 3 if self.compression == "zstd" else 6


class EncryptionConfig(_Section):
    mode: Literal["gpg", "none"] = "gpg"
    # Validated when left out too, so that its absence is reported on this key.
    recipients: tuple[str, ...] = Field(default=(), validate_default=True)
    gnupg_home: AbsolutePath = Path("/etc/btrsendd/gnupg")

    @field_validator("recipients")
    @classmethod
    def _recipients_for_gpg(
        cls, recipients: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        if info.data.get("mode") == "gpg" and not recipients:
            raise ValueError(
                "no recipient to encrypt to: list the fingerprint of at least one public key "
                '(gpg --list-keys --with-fingerprint), or set mode = "none" explicitly'
            )
        return recipients


StorageClass = Literal[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
]


class StorageConfig(_Section):
    backend: Literal["s3", "glacier-vault", "local"] = "s3"
    bucket: str | None = None
    prefix: str = ""
    storage_class: StorageClass = "DEEP_ARCHIVE"
    region: str = "us-east-1"
    endpoint_url: Annotated[str | None, AfterValidator(no_secrets_in_url)] = None
    vault: str | None = None
    path: AbsolutePath | None = None
    # How long one request keeps retrying (throttling, 5xx, resets, timeouts) before the
    # cycle fails; the next cycle resumes from the last stored volume.
    retry_budget: float = Field(default=300.0, gt=0)
    # Object Lock (WORM): every object is locked until its chain could expire, plus a margin,
    # so that the host's own credentials cannot delete or rewrite what it backed up.
    object_lock: Literal["off", "governance", "compliance"] = "off"
    object_lock_margin_days: int = Field(default=7, ge=1, le=3650)

    @field_validator("prefix")
    @classmethod
    def _clean_prefix(cls, prefix: str) -> str:
        return prefix.strip("/")

    @model_validator(mode="after")
    def _backend_needs(self) -> StorageConfig:
        # Each backend knows its keys (``storage/<backend>/``); the keys themselves stay flat.
        backend = backend_of(self)
        problem = backend.config_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if self.object_lock != "off" and not backend.locks:
            raise ValueError(
                f'object_lock = "{self.object_lock}" needs backend = "s3" (a bucket with S3 '
                f'Object Lock); backend "{self.backend}" cannot lock: set object_lock = "off"'
            )
        return self


class PriceOverride(_Section):
    """Fields of one built-in retrieval price to replace; those left out keep their value."""

    per_gb: float | None = Field(default=None, ge=0)
    per_1000_requests: float | None = Field(default=None, ge=0)
    wait: str | None = None


class RestoreConfig(_Section):
    """Prices ``restore`` estimates with: the built-in AWS list prices, overridden here for
    another region, a negotiated rate, or a restore that never leaves AWS (no transfer)."""

    transfer_out_per_gb: float = Field(default=TRANSFER_OUT_PER_GB, ge=0)
    read_fee_per_gb: dict[StorageClass, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    prices: dict[
        Literal["DEEP_ARCHIVE", "GLACIER", "GLACIER_VAULT"],
        dict[Literal["Expedited", "Standard", "Bulk"], PriceOverride],
    ] = Field(default_factory=dict)

    @field_validator("prices")
    @classmethod
    def _known_tiers(
        cls, prices: dict[str, dict[str, PriceOverride]]
    ) -> dict[str, dict[str, PriceOverride]]:
        # A price for a tier AWS does not offer would make restore accept --tier with it.
        for storage_class, tiers in prices.items():
            unknown = sorted(set(tiers) - set(THAW[storage_class]))
            if unknown:
                raise ValueError(
                    f"{storage_class} has no tier {', '.join(unknown)}; its tiers are "
                    + ", ".join(sorted(THAW[storage_class]))
                )
        return prices


_SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SourceConfig(_Section):
    name: str
    path: AbsolutePath
    snapshot_dir: AbsolutePath

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        # The name becomes part of object keys and file names: keep it to a safe alphabet.
        if not _SOURCE_NAME_RE.match(name):
            raise ValueError(
                f"source name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return name


class HooksConfig(_Section):
    """Programs run per source around its snapshot and after its cycle (``hooks.py``)."""

    pre_snapshot: HookCommand = ()
    post_snapshot: HookCommand = ()
    on_success: HookCommand = ()
    on_failure: HookCommand = ()
    # Seconds a hook may run before its whole process group is killed.
    timeout: float = Field(default=300.0, gt=0, le=86400)


class MetricsConfig(_Section):
    # Off by default.  A path in node_exporter's textfile directory turns it on.
    textfile: AbsolutePath | None = None


class Config(_Section):
    state_dir: AbsolutePath = Path("/var/lib/btrsendd")
    schedule: ScheduleConfig = ScheduleConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    encryption: EncryptionConfig
    storage: StorageConfig
    restore: RestoreConfig = RestoreConfig()
    metrics: MetricsConfig = MetricsConfig()
    hooks: HooksConfig = HooksConfig()
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    # Where the file came from, for messages; not a TOML key.
    source_file: Path | None = Field(default=None, exclude=True)

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        # A field validator, not a model one, so the error is reported on key "sources".
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return sources

    def source(self, name: str) -> SourceConfig:
        """The source called ``name``; a usage error naming the known ones otherwise."""
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources)
        raise ConfigError(f"no source named {name!r} in the configuration (known: {known})")

    def selected_sources(self, name: str | None) -> Sequence[SourceConfig]:
        """All sources, or just the one named (``--source``)."""
        return self.sources if name is None else [self.source(name)]


def config_path(cli_path: str | os.PathLike[str] | None) -> Path:
    """``--config`` wins, then ``$BTRSENDD_CONFIG``, then the system default."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


class ConfigFileError(ConfigError):
    """The file is missing, unreadable or not TOML: nothing in it can be checked."""

    def __init__(self, path: Path, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Validated:
    """What validating a file's data found: the ``config``, or its ``problems`` (one per
    mistake, on the key as written) and the top-level keys that are ``intact`` (validated on
    their own, with the defaults of those left out), which check-config checks on the
    machine all the same."""

    config: Config | None
    problems: list[Finding]
    intact: dict[str, Any]


def validate(data: dict[str, Any], path: Path) -> Validated:
    """``data`` (a file's TOML) as a ``Config``, or every problem with it."""
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        return Validated(None, schema_findings(err, data, Config), intact(Config, data, err))
    return Validated(config.model_copy(update={"source_file": path}), [], {})


def _toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, f"not valid TOML: {exc}") from None


def _valid(data: dict[str, Any], path: Path) -> Config:
    validated = validate(data, path)
    if validated.config is None:
        # One line per problem: the CLI prints each as an error line of its own.
        raise ConfigError("\n".join(f"{path}: {p.key}: {p.message}" for p in validated.problems))
    return validated.config


def parse_config(text: str, path: Path) -> Config:
    """Parse TOML text; raise ``ConfigError`` whose message lists every problem, one per line."""
    return _valid(_toml(text, path), path)


def read_config_data(path: Path) -> dict[str, Any]:
    """The TOML of the file at ``path``, not yet validated."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(
            path,
            f"no such file; copy {example_config()} there and edit it, or pass --config PATH "
            f"(or set {CONFIG_ENV})",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(path, f"cannot read: {exc}") from None
    return _toml(text, path)


def load_config(path: Path) -> Config:
    """Read and validate the file at ``path``."""
    return _valid(read_config_data(path), path)

"""parse_config / load_config: defaults, sizes, and an error naming file and key for every
kind of mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from btrsendd.config import Config, load_config
from btrsendd.errors import ConfigError
from btrsendd.units import parse_size
from tests.support.configs import FILE, MINIMAL, parse, with_section


def test_defaults() -> None:
    config = parse(MINIMAL)

    assert config.source_file == FILE
    assert config.state_dir == Path("/var/lib/btrsendd")
    assert config.schedule.cron == "0 0 * * *"
    assert config.schedule.backup_days == (1, 7, 14, 21)
    assert config.schedule.max_incrementals == 11
    assert config.schedule.chain_lifetime_days == 90
    assert config.schedule.catch_up is True
    assert config.snapshots.keep_days == 60
    assert config.pipeline.compression == "gzip"
    assert config.pipeline.effective_level == 6
    assert config.pipeline.volume_size == 1024**3
    assert config.pipeline.part_size == 16 * 1024**2
    assert config.pipeline.concurrency == 4
    assert config.encryption.mode == "gpg"
    assert config.encryption.gnupg_home == Path("/etc/btrsendd/gnupg")
    assert config.storage.backend == "s3"
    assert config.storage.storage_class == "DEEP_ARCHIVE"
    assert config.storage.region == "us-east-1"
    assert config.storage.prefix == ""
    assert config.restore.transfer_out_per_gb == 0.09
    assert config.restore.prices == {} and config.restore.read_fee_per_gb == {}
    [src] = config.sources
    assert (src.name, src.path, src.snapshot_dir) == (
        "home",
        Path("/home"),
        Path("/home/.btrsendd"),
    )


def test_example_configuration_parses_with_every_key() -> None:
    example = Path(__file__).parent.parent / "config" / "btrsendd.toml"
    config = load_config(example)

    assert config.encryption.recipients == ("0123456789ABCDEF0123456789ABCDEF01234567",)
    assert config.storage.bucket == "example-backups"
    assert config.storage.prefix == "host1"
    text = example.read_text()
    sections = {
        "schedule": config.schedule,
        "snapshots": config.snapshots,
        "pipeline": config.pipeline,
        "encryption": config.encryption,
        "storage": config.storage,
        "restore": config.restore,
        "metrics": config.metrics,
        "hooks": config.hooks,
        "[sources]": config.sources[0],
    }
    for key in Config.model_fields.keys() - sections.keys() - {"sources", "source_file"}:
        assert f"\n{key} = " in text, key
    for section, model in sections.items():
        assert f"\n[{section}]\n" in text
        for key in type(model).model_fields:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{section}.{key}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1GiB", 1024**3),
        ("512 MiB", 512 * 1024**2),
        ("10MB", 10 * 1000**2),
        ("1.5 GiB", 1536 * 1024**2),
        (1048576, 1048576),
    ],
)
def test_sizes(value: str | int, expected: int) -> None:
    assert parse_size(value) == expected
    rendered = f'"{value}"' if isinstance(value, str) else str(value)
    config = parse(MINIMAL + f"\n[pipeline]\nvolume_size = {rendered}\n")
    assert config.pipeline.volume_size == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"20MiB/s"', 20 * 1024**2),
        ('"500 KiB/s"', 500 * 1024),
        ('"40Mbit/s"', 5 * 1000**2),
        ('"1.5MB/s"', 1_500_000),
        ("1048576", 1048576),
        ('"unlimited"', None),
    ],
)
def test_rate_limits(value: str, expected: int | None) -> None:
    config = parse(MINIMAL + f"\n[pipeline]\nrate_limit = {value}\n")
    assert config.pipeline.rate_limit == expected
    assert parse(MINIMAL).pipeline.rate_limit is None


@pytest.mark.parametrize(
    "url", ["https://s3.example.com", "http://127.0.0.1:8333", "https://s3.example.com/path/?"]
)
def test_endpoint_url_without_secrets(url: str) -> None:
    assert parse(with_section("storage", f"endpoint_url = '{url}'")).storage.endpoint_url == url


def test_every_problem_is_reported_on_its_own_line() -> None:
    text = "bogus = 1\n" + with_section("schedule", "cron = 'x'\nbackup_days = [40]")

    with pytest.raises(ConfigError) as raised:
        parse(text)

    keys = [line.split(": ")[1] for line in str(raised.value).splitlines()]
    assert sorted(keys) == ["bogus", "schedule.backup_days", "schedule.cron"]


def test_bad_toml() -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(FILE))}: not valid TOML: .*line 2"):
        parse("[storage]\nbucket = \n")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "btrsendd.toml"

    with pytest.raises(ConfigError) as raised:
        load_config(missing)

    assert str(raised.value) == (
        f"{missing}: no such file; copy /usr/share/doc/btrsendd/btrsendd.toml.example there "
        "and edit it, or pass --config PATH (or set BTRSENDD_CONFIG)"
    )


def test_load_config_records_the_file(tmp_path: Path) -> None:
    path = tmp_path / "btrsendd.toml"
    path.write_text(MINIMAL)

    assert load_config(path).source_file == path

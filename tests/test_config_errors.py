"""Configuration mistakes: an error naming file and key for every kind, "did you mean" for
misspellings, the installed example named, and what is sound in a file with mistakes
(``config_errors.py``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from btrsendd import config_errors
from btrsendd.config import validate
from btrsendd.errors import ConfigError
from tests.support.configs import EXAMPLE, FILE, MINIMAL, parse, with_section

BAD_CASES = [
    pytest.param("bogus = 1\n" + MINIMAL, "bogus", "unknown key", id="unknown-top-level"),
    pytest.param(
        with_section("schedule", "crn = '0 0 * * *'"),
        "schedule.crn",
        "unknown key",
        id="unknown-in-section",
    ),
    pytest.param(
        MINIMAL.replace('name = "home"', 'name = "home"\nexclude = ["x"]'),
        "sources[0] (name = 'home').exclude",
        "unknown key",
        id="unknown-in-source",
    ),
    pytest.param(
        with_section("schedule", "cron = '0 0 * *'"),
        "schedule.cron",
        "has 4 fields",
        id="cron-field-count",
    ),
    pytest.param(
        with_section("schedule", "cron = '0 24 * * *'"),
        "schedule.cron",
        "'24' in the hour field",
        id="cron-out-of-range",
    ),
    pytest.param(
        with_section("schedule", "cron = '61 0 * * *'"),
        "schedule.cron",
        "'61' in the minute field",
        id="cron-minute",
    ),
    pytest.param(
        with_section("schedule", "backup_days = [1, 32]"),
        "schedule.backup_days",
        "1 to 31, not [32]",
        id="backup-day-high",
    ),
    pytest.param(
        with_section("schedule", "backup_days = [0]"),
        "schedule.backup_days",
        "1 to 31, not [0]",
        id="backup-day-zero",
    ),
    pytest.param(
        with_section("schedule", "backup_days = []"),
        "schedule.backup_days",
        "at least one day",
        id="backup-days-empty",
    ),
    pytest.param(
        MINIMAL.replace('bucket = "b"', ""),
        "storage",
        "needs storage.bucket",
        id="s3-without-bucket",
    ),
    pytest.param(
        MINIMAL.replace('bucket = "b"', 'backend = "glacier-vault"'),
        "storage",
        "needs storage.vault",
        id="vault-without-vault",
    ),
    pytest.param(
        MINIMAL.replace('recipients = ["0123456789ABCDEF0123456789ABCDEF01234567"]', ""),
        "encryption.recipients",
        "no recipient to encrypt to: list the fingerprint of at least one public key",
        id="gpg-without-recipients",
    ),
    pytest.param(
        MINIMAL + '\n[[sources]]\nname = "home"\npath = "/srv"\nsnapshot_dir = "/srv/.s"\n',
        "sources",
        "repeated: home",
        id="duplicate-source-names",
    ),
    pytest.param(
        MINIMAL.replace('path = "/home"', 'path = "home"'),
        "sources[0] (name = 'home').path",
        "'home' must be an absolute path",
        id="relative-source-path",
    ),
    pytest.param(
        MINIMAL.replace('snapshot_dir = "/home/.btrsendd"', 'snapshot_dir = ".btrsendd"'),
        "sources[0] (name = 'home').snapshot_dir",
        "must be an absolute path",
        id="relative-snapshot-dir",
    ),
    pytest.param(
        'state_dir = "var/lib/btrsendd"\n' + MINIMAL,
        "state_dir",
        "must be an absolute path",
        id="relative-state-dir",
    ),
    pytest.param(
        MINIMAL.replace('bucket = "b"', 'backend = "local"\npath = "archive"'),
        "storage.path",
        "must be an absolute path",
        id="relative-local-path",
    ),
    pytest.param(
        MINIMAL.replace('name = "home"', 'name = "home/x"'),
        "sources[0] (name = 'home/x').name",
        "must be 1-64 letters",
        id="bad-source-name",
    ),
    pytest.param(
        with_section("pipeline", 'volume_size = "1 parsec"'),
        "pipeline.volume_size",
        "is not a size",
        id="bad-size",
    ),
    pytest.param(
        with_section("pipeline", 'compression = "zstd"\nlevel = 23'),
        "pipeline.level",
        "less than or equal to 22",
        id="level-too-high",
    ),
    pytest.param(
        with_section("pipeline", 'compression = "gzip"\nlevel = 12'),
        "pipeline",
        "gzip levels run from 1 to 9",
        id="gzip-level",
    ),
    pytest.param(
        with_section("storage", 'storage_class = "COLD"'),
        "storage.storage_class",
        "DEEP_ARCHIVE",
        id="bad-storage-class",
    ),
    pytest.param(
        MINIMAL.split("[[sources]]")[0], "sources", "required key is missing", id="no-sources"
    ),
    pytest.param(
        with_section("restore.prices.DEEP_ARCHIVE.Expedited", "per_gb = 0.1"),
        "restore.prices",
        "DEEP_ARCHIVE has no tier Expedited; its tiers are Bulk, Standard",
        id="price-for-missing-tier",
    ),
    pytest.param(
        with_section("storage", "endpoint_url = 'https://AKIAID:SeCrEt@s3.example.com'"),
        "storage.endpoint_url",
        "holds credentials (user:password@ before the host); remove them, and give btrsendd "
        "its keys through the AWS credential chain instead: AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY in its environment, or ~/.aws/credentials",
        id="endpoint-with-credentials",
    ),
    pytest.param(
        with_section("storage", "endpoint_url = 'https://s3.example.com/?token=SeCrEt'"),
        "storage.endpoint_url",
        "has a query string or fragment, which an endpoint never needs",
        id="endpoint-with-query",
    ),
    pytest.param(
        with_section("storage", "endpoint_url = 's3.example.com:SeCrEt'"),
        "storage.endpoint_url",
        'is not a URL like "https://HOST" or "http://HOST:PORT"',
        id="endpoint-not-a-url",
    ),
    pytest.param(
        with_section("storage", 'backend = "local"\npath = "/srv/a"\nobject_lock = "compliance"'),
        "storage",
        'object_lock = "compliance" needs backend = "s3" (a bucket with S3 Object Lock); backend '
        '"local" cannot lock: set object_lock = "off"',
        id="object-lock-on-local",
    ),
    pytest.param(
        with_section("storage", 'object_lock = "WORM"'),
        "storage.object_lock",
        "'off', 'governance' or 'compliance'",
        id="object-lock-mode",
    ),
    pytest.param(
        with_section("storage", "object_lock_margin_days = 0"),
        "storage.object_lock_margin_days",
        "greater than or equal to 1",
        id="object-lock-margin",
    ),
    pytest.param(
        with_section("pipeline", 'rate_limit = "20MiB"'),
        "pipeline.rate_limit",
        "'20MiB' is a size, not a rate: write 20MiB/s",
        id="rate-without-per-second",
    ),
    pytest.param(
        with_section("pipeline", 'rate_limit = "20Mb/s"'),
        "pipeline.rate_limit",
        "ambiguous: write 20MB/s for bytes or 20Mbit/s for bits per second",
        id="rate-bits-or-bytes",
    ),
    pytest.param(
        with_section("pipeline", "rate_limit = 0"),
        "pipeline.rate_limit",
        'too slow: a rate limit is at least 1KiB/s (leave it out, or "unlimited", for no limit)',
        id="rate-zero",
    ),
    pytest.param(
        with_section("pipeline", 'rate_limit = "fast"'),
        "pipeline.rate_limit",
        """'fast' is not a rate; write it like "20MiB/s", "500KiB/s" or "40Mbit/s\"""",
        id="rate-nonsense",
    ),
    pytest.param(
        with_section("hooks", 'on_success = "curl -fsS https://hc-ping.com/x"'),
        "hooks.on_success",
        "is a string; write the command as a list of its arguments, e.g. "
        '["/usr/local/sbin/db-freeze", "--all"]: hooks run without a shell',
        id="hook-as-a-string",
    ),
    pytest.param(
        with_section("hooks", 'pre_snapshot = ["bin/db-freeze"]'),
        "hooks.pre_snapshot",
        "'bin/db-freeze' is no program: give its absolute path, or a name alone",
        id="hook-relative-path",
    ),
    pytest.param(
        with_section("hooks", "timeout = 0"),
        "hooks.timeout",
        "greater than 0",
        id="hook-timeout",
    ),
    pytest.param(
        with_section("restore", "transfer_out_per_gb = -1"),
        "restore.transfer_out_per_gb",
        "greater than or equal to 0",
        id="negative-price",
    ),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD_CASES)
def test_bad_configuration_names_file_and_key(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text)

    lines = str(raised.value).splitlines()
    assert any(line.startswith(f"{FILE}: {key}: ") and message in line for line in lines), lines
    assert "SeCrEt" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        pytest.param(
            with_section("schedule", "crn = '0 0 * * *'"),
            f'schedule.crn: unknown key; did you mean "cron"? ({EXAMPLE})',
            id="misspelt-key",
        ),
        pytest.param(
            "[schedul]\ncron = '0 0 * * *'\n" + MINIMAL,
            f'schedul: unknown key; did you mean "schedule"? ({EXAMPLE})',
            id="misspelt-section",
        ),
        pytest.param(
            MINIMAL.replace("[[sources]]", "[[source]]"),
            "sources: required key is missing (see /usr/share/doc/btrsendd/btrsendd.toml.example)"
            f'\nsource: unknown key; did you mean "sources"? ({EXAMPLE})',
            id="misspelt-array-of-tables",
        ),
        pytest.param(
            MINIMAL.replace('snapshot_dir = "/home/.btrsendd"', 'snapshotdir = "/h/.b"'),
            "sources[0] (name = 'home').snapshot_dir: required key is missing (see "
            "/usr/share/doc/btrsendd/btrsendd.toml.example)\n"
            "sources[0] (name = 'home').snapshotdir: unknown key; did you mean "
            f'"snapshot_dir"? ({EXAMPLE})',
            id="misspelt-in-a-source",
        ),
        pytest.param(
            with_section("restore.prices.DEEP_ARCHIVE.Bulk", "per_gbb = 0.1"),
            'restore.prices.DEEP_ARCHIVE.Bulk.per_gbb: unknown key; did you mean "per_gb"? '
            f"({EXAMPLE})",
            id="misspelt-in-a-table-of-tables",
        ),
        pytest.param(
            'bucket = "b2"\n' + MINIMAL,
            f"bucket: unknown key here; bucket belongs in [storage] ({EXAMPLE})",
            id="key-above-its-header",
        ),
        pytest.param(
            with_section("snapshots", "zzz = 1"),
            f"snapshots.zzz: unknown key; the keys here are keep_days ({EXAMPLE})",
            id="nothing-close",
        ),
        pytest.param(
            with_section("storage", 'storage_class = "deep_archive"'),
            "storage.storage_class: Input should be 'STANDARD', 'STANDARD_IA', 'ONEZONE_IA', "
            "'INTELLIGENT_TIERING', 'GLACIER_IR', 'GLACIER' or 'DEEP_ARCHIVE'; did you mean "
            '"DEEP_ARCHIVE"?',
            id="value-in-the-wrong-case",
        ),
    ],
)
def test_a_misspelling_is_answered_with_what_was_meant(text: str, lines: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text)

    assert str(raised.value).splitlines() == [f"{FILE}: {line}" for line in lines.splitlines()]


def test_the_example_named_is_the_installed_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = tmp_path / "local" / "btrsendd.toml.example"
    monkeypatch.setattr(config_errors, "EXAMPLE_CONFIGS", (tmp_path / "deb", local))
    assert config_errors.example_config() == tmp_path / "deb"  # none installed: the package's
    local.parent.mkdir()
    local.write_text("")
    assert config_errors.example_config() == local


def test_what_is_sound_in_a_file_with_mistakes() -> None:
    text = with_section("schedule", "crn = 1") + '\n[pipeline]\ncompression = "zstd"\n'
    validated = validate(tomllib.loads(text), FILE)

    assert validated.config is None
    assert [p.key for p in validated.problems] == ["schedule.crn"]
    intact = validated.intact
    assert sorted(intact) == [
        "encryption", "hooks", "metrics", "pipeline", "restore", "snapshots", "sources",
        "state_dir", "storage",
    ]  # fmt: skip
    assert intact["pipeline"].compression == "zstd" and intact["pipeline"].level is None
    assert intact["state_dir"] == Path("/var/lib/btrsendd")
    assert [s.name for s in intact["sources"]] == ["home"]
    assert validate(tomllib.loads(MINIMAL), FILE).config == parse(MINIMAL)

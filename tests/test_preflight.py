"""check-config's machine checks, on real btrfs filesystems and real gpg keyrings."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from btrsendd.config import Config
from btrsendd.errors import StorageError
from btrsendd.preflight import Finding, average_backup_gap, check, format_findings
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import BadKeys, GpgKey

SRC = "sources[0].path (name = 'home')"
SNAPDIR = "sources[0].snapshot_dir (name = 'home')"


@dataclass
class Setup:
    """A machine on which the configuration ``data`` describes is entirely sound."""

    data: dict[str, Any]
    file: Path
    fs: Path

    def config(self) -> Config:
        return Config.model_validate(self.data).model_copy(update={"source_file": self.file})

    def findings(self) -> list[Finding]:
        return check(self.config())


@pytest.fixture
def setup(tmp_path: Path, btrfs_fs: Path, gpg_key: GpgKey) -> Setup:
    source = make_subvolume(btrfs_fs / "home")
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    file = tmp_path / "btrsendd.toml"
    file.write_text("# contents are not read by check()\n")
    file.chmod(0o600)
    data: dict[str, Any] = {
        "state_dir": str(state_dir),
        "encryption": {
            "recipients": [gpg_key.fingerprint],
            "gnupg_home": str(gpg_key.public_home),
        },
        "storage": {"backend": "local", "path": str(tmp_path / "archive")},
        "sources": [
            {"name": "home", "path": str(source), "snapshot_dir": str(source / ".btrsendd")}
        ],
    }
    return Setup(data, file, btrfs_fs)


def only(findings: list[Finding], key: str) -> list[Finding]:
    return [f for f in findings if f.key == key]


def test_clean_configuration_has_no_findings(setup: Setup) -> None:
    assert setup.findings() == []


# -- the file and state_dir ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "level", "text"),
    [
        (0o644, "error", "readable by every user (mode 0644)"),
        (
            0o602,
            "error",
            "writable by every user (mode 0602), who can change what btrsendd does as root",
        ),
        (0o640, "warning", "readable by its group (mode 0640)"),
        (
            0o620,
            "error",
            "writable by its group (mode 0620), who can change what btrsendd does as root",
        ),
    ],
)
def test_config_file_permissions(
    setup: Setup, mode: int, level: Literal["error", "warning"], text: str
) -> None:
    setup.file.chmod(mode)

    expected = Finding(level, str(setup.file), f"{text}; chmod 600 {setup.file}")
    assert setup.findings() == [expected]


def test_state_dir_permissions(setup: Setup) -> None:
    state_dir = Path(setup.data["state_dir"])
    state_dir.chmod(0o755)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("warning", "state_dir")
    assert finding.message.startswith(f"{state_dir} has mode 0755: others can read the catalog")
    assert f"chmod 700 {state_dir} (btrsendd does so itself" in finding.message
    state_dir.rmdir()
    assert setup.findings() == []
    state_dir.write_text("")
    assert [f.level for f in only(setup.findings(), "state_dir")] == ["error"]


# -- sources ---------------------------------------------------------------------------------


def test_source_that_is_a_plain_directory(setup: Setup) -> None:
    plain = setup.fs / "plain"
    plain.mkdir()
    setup.data["sources"][0].update(path=str(plain), snapshot_dir=str(plain / ".btrsendd"))

    assert format_findings(setup.findings()) == [
        f"error: {SRC}: {plain} is not a btrfs subvolume; create it with `btrfs subvolume "
        "create` or point sources.path at one"
    ]


def test_source_missing(setup: Setup) -> None:
    missing = setup.fs / "missing"
    setup.data["sources"][0].update(path=str(missing), snapshot_dir=str(setup.fs / "snaps"))

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", SRC)
    assert f"{missing} does not exist; create it with `btrfs subvolume create" in finding.message


def test_snapshot_dir_on_another_filesystem(setup: Setup, make_btrfs: MakeBtrfs) -> None:
    other = make_btrfs("other")
    setup.data["sources"][0]["snapshot_dir"] = str(other / "snaps")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", SNAPDIR)
    assert f"{other / 'snaps'} is on another filesystem than {setup.fs / 'home'}" in (
        finding.message
    )
    assert f"e.g. {setup.fs / 'home' / '.btrsendd'}" in finding.message


def test_snapshot_dir_in_another_subvolume_of_the_same_filesystem(setup: Setup) -> None:
    snaps = make_subvolume(setup.fs / "snaps")
    snaps.chmod(0o700)
    setup.data["sources"][0]["snapshot_dir"] = str(snaps)

    assert setup.findings() == []


def test_snapshot_dir_parent_missing(setup: Setup) -> None:
    setup.data["sources"][0]["snapshot_dir"] = str(setup.fs / "no" / "snaps")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", SNAPDIR)
    assert f"the parent directory {setup.fs / 'no'} does not exist" in finding.message


def test_snapshot_dir_shared_by_two_sources(setup: Setup) -> None:
    other = make_subvolume(setup.fs / "srv")
    shared = setup.data["sources"][0]["snapshot_dir"]
    setup.data["sources"].append({"name": "srv", "path": str(other), "snapshot_dir": shared})

    shared_findings = [f for f in setup.findings() if "also the snapshot_dir" in f.message]
    [finding] = shared_findings
    assert (finding.level, finding.key) == ("error", "sources[1].snapshot_dir (name = 'srv')")
    assert "also the snapshot_dir of source 'home'" in finding.message


# -- encryption ------------------------------------------------------------------------------


def test_encryption_none_warns(setup: Setup) -> None:
    setup.data["encryption"] = {"mode": "none", "gnupg_home": "/nonexistent"}

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("warning", "encryption.mode")
    assert finding.message.startswith("backups are stored unencrypted")


def test_gnupg_home_missing(setup: Setup, tmp_path: Path) -> None:
    setup.data["encryption"]["gnupg_home"] = str(tmp_path / "gnupg")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "encryption.gnupg_home")
    assert f"install -d -m 700 {tmp_path / 'gnupg'}" in finding.message


def test_recipient_not_in_keyring(setup: Setup, other_gpg_key: GpgKey) -> None:
    setup.data["encryption"]["recipients"].append(other_gpg_key.fingerprint)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "encryption.recipients[1]")
    assert finding.message.startswith(f"no public key {other_gpg_key.fingerprint} in ")


def test_secret_key_on_the_backup_host(setup: Setup, gpg_key: GpgKey) -> None:
    setup.data["encryption"]["gnupg_home"] = str(gpg_key.secret_home)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("warning", "encryption.gnupg_home")
    assert "secret key(s); this host only encrypts" in finding.message


def test_recipient_not_named_by_fingerprint(setup: Setup, gpg_key: GpgKey) -> None:
    setup.data["encryption"]["recipients"] = [gpg_key.fingerprint[-16:]]

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("warning", "encryption.recipients[0]")
    assert "is not a full fingerprint" in finding.message


@pytest.mark.parametrize(
    ("which", "text"),
    [
        ("expired", "has expired; extend it"),
        ("revoked", "is revoked; import the recipient's new key"),
        ("sign_only", "has no usable encryption subkey"),
    ],
)
def test_unusable_recipient_keys(setup: Setup, bad_keys: BadKeys, which: str, text: str) -> None:
    fingerprint = getattr(bad_keys, which)
    setup.data["encryption"].update(recipients=[fingerprint], gnupg_home=str(bad_keys.home))

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "encryption.recipients[0]")
    assert finding.message.startswith(f"key {fingerprint} {text}")


# -- programs --------------------------------------------------------------------------------


def path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *programs: str) -> None:
    """Make PATH hold only ``programs``, as if nothing else were installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in programs:
        found = shutil.which(program)
        assert found is not None, program
        (bin_dir / program).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_nothing_installed(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path_with(tmp_path, monkeypatch)

    assert format_findings(setup.findings()) == [
        "error: pipeline.compression: neither pigz nor gzip is installed; install pigz (or gzip)",
        "error: encryption.mode: gpg is not installed; install gnupg",
        "error: sources: the btrfs command is not installed (btrsendd runs `btrfs send`); "
        "install btrfs-progs",
    ]


def test_plain_gzip_is_enough(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path_with(tmp_path, monkeypatch, "gzip", "gpg", "btrfs")

    assert setup.findings() == []


def test_zstd_missing(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path_with(tmp_path, monkeypatch, "pigz", "gpg", "btrfs")
    setup.data["pipeline"] = {"compression": "zstd"}

    assert format_findings(setup.findings()) == [
        "error: pipeline.compression: zstd is not installed; install zstd or set "
        'compression = "gzip"'
    ]


# -- storage ---------------------------------------------------------------------------------


def test_local_storage_path(setup: Setup, tmp_path: Path) -> None:
    deep = tmp_path / "not" / "there"
    setup.data["storage"]["path"] = str(deep)
    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("warning", "storage.path")
    assert f"neither {deep} nor its parent exists" in finding.message

    setup.data["storage"]["path"] = str(setup.file)
    assert [(f.level, f.key) for f in setup.findings()] == [("error", "storage.path")]


def test_check_storage_errors_become_findings(setup: Setup) -> None:
    calls = []

    def denied() -> None:
        calls.append(1)
        raise StorageError("s3://b/host1: access denied; check the IAM policy")

    assert check(setup.config(), check_storage=denied) == [
        Finding("error", "storage", "s3://b/host1: access denied; check the IAM policy")
    ]
    assert calls == [1]
    assert check(setup.config(), check_storage=lambda: None) == []


def test_check_storage_bugs_are_not_hidden(setup: Setup) -> None:
    def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        check(setup.config(), check_storage=buggy)


# -- early deletion --------------------------------------------------------------------------


def test_average_backup_gap() -> None:
    assert average_backup_gap([1, 7, 14, 21]) == 1461 / 192
    assert average_backup_gap([1]) == 1461 / 48
    assert average_backup_gap([31]) == 1461 / 28  # seven months a year have a 31st


def early_deletion(setup: Setup, storage: dict[str, Any], **schedule: Any) -> list[Finding]:
    setup.data["storage"] = storage
    setup.data["schedule"] = schedule
    return only(setup.findings(), "schedule.chain_lifetime_days")


S3 = {"backend": "s3", "bucket": "b"}


def test_early_deletion_with_defaults_on_deep_archive(setup: Setup) -> None:
    assert format_findings(early_deletion(setup, S3)) == [
        "warning: schedule.chain_lifetime_days: a chain's full backup is stored about 174 days "
        "(90 chain_lifetime_days + 84 days for 11 incrementals 7.6 days apart), less than the "
        "180-day minimum of DEEP_ARCHIVE, which bills early deletion as if kept 180 days; raise "
        'chain_lifetime_days to 97 or choose storage_class = "GLACIER"'
    ]


def test_early_deletion_threshold_is_the_suggested_value(setup: Setup) -> None:
    assert early_deletion(setup, S3, chain_lifetime_days=97) == []
    assert early_deletion(setup, S3, chain_lifetime_days=96)


def test_early_deletion_on_a_vault(setup: Setup) -> None:
    vault = {"backend": "glacier-vault", "vault": "Backup"}

    assert early_deletion(setup, vault) == []
    [finding] = early_deletion(setup, vault, chain_lifetime_days=30, max_incrementals=5)
    assert "stored about 68 days (30 chain_lifetime_days + 38 days for 5 incrementals" in (
        finding.message
    )
    assert "90-day minimum of Glacier vaults" in finding.message
    assert finding.message.endswith(
        'raise chain_lifetime_days to 52 or choose backend = "s3" with '
        'storage_class = "STANDARD_IA"'
    )


@pytest.mark.parametrize(
    ("storage_class", "lifetime", "warns"),
    [
        ("GLACIER", 10, False),  # 10 + 84 >= 90
        ("GLACIER_IR", 5, True),
        ("STANDARD_IA", 1, False),
        ("ONEZONE_IA", 1, False),
        ("STANDARD", 1, False),
        ("INTELLIGENT_TIERING", 1, False),
    ],
)
def test_early_deletion_per_class(
    setup: Setup, storage_class: str, lifetime: int, warns: bool
) -> None:
    storage = {**S3, "storage_class": storage_class}

    assert bool(early_deletion(setup, storage, chain_lifetime_days=lifetime)) == warns


def test_early_deletion_without_incrementals(setup: Setup) -> None:
    [finding] = early_deletion(setup, S3, max_incrementals=0, chain_lifetime_days=31)

    assert 'raise chain_lifetime_days to 180 or choose storage_class = "STANDARD_IA"' in (
        finding.message
    )


def test_cold_class_on_a_compatible_endpoint_warns(setup: Setup) -> None:
    setup.data["storage"] = {
        "backend": "s3",
        "bucket": "b",
        "endpoint_url": "http://127.0.0.1:8333",
        "storage_class": "DEEP_ARCHIVE",
    }
    warnings = only(setup.findings(), "storage.storage_class")
    assert [f.level for f in warnings] == ["warning"]
    assert 'storage_class = "STANDARD"' in warnings[0].message


# -- what others could change ------------------------------------------------------------------


def test_schedule_that_never_fires(setup: Setup) -> None:
    setup.data["schedule"] = {"cron": "0 0 31 4,6,9,11 *"}

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "schedule.cron")
    assert finding.message.startswith("'0 0 31 4,6,9,11 *' never fires")
    assert finding.message.endswith('e.g. "0 0 28 4,6,9,11 *"')


def test_directory_reached_through_someone_elses_symlink(
    setup: Setup, gpg_key: GpgKey, tmp_path: Path
) -> None:
    link = tmp_path / "keys"
    link.symlink_to(gpg_key.public_home)
    os.lchown(link, 65534, 65534)
    setup.data["encryption"]["gnupg_home"] = str(link)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "encryption.gnupg_home")
    assert finding.message.startswith(
        f"{link} is reached through the symlink {link}, which belongs to user nobody, who can "
        "point it elsewhere"
    )


def test_directory_in_a_parent_others_can_write_to(setup: Setup, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    setup.data["state_dir"] = str(shared / "state")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "state_dir")
    assert f"lies inside {shared}, which others can write to (mode 0777)" in finding.message
    shared.chmod(0o1777)  # sticky, as /tmp: nobody can rename what is not theirs
    assert setup.findings() == []


def test_state_dir_holding_someone_elses_file(setup: Setup) -> None:
    state_dir = Path(setup.data["state_dir"])
    planted = state_dir / "catalog.db"
    planted.write_text("")
    os.chown(planted, 65534, 65534)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "state_dir")
    assert finding.message.startswith(f"{state_dir} holds catalog.db, which belongs to user nobody")

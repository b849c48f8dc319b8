"""check-config's checks of storage: the local archive's path, the backend's own access check,
and early deletion, where a schedule would delete chains before the storage class's minimum
storage duration and be billed as if it had kept them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from btrsendd.errors import StorageError
from btrsendd.findings import Finding
from btrsendd.preflight import average_backup_gap, check, format_findings
from tests.preflight.helpers import Setup, only


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


def test_compliance_mode_says_how_long_no_one_can_delete(setup: Setup) -> None:
    setup.data["storage"] = {"backend": "s3", "bucket": "b", "object_lock": "governance"}
    assert only(setup.findings(), "storage.object_lock") == []
    setup.data["storage"]["object_lock"] = "compliance"
    setup.data["storage"]["object_lock_margin_days"] = 3
    [warning] = only(setup.findings(), "storage.object_lock")
    assert warning.level == "warning"
    assert warning.message.startswith(
        '"compliance" locks every object for at least 93 days after its chain\'s newest backup'
    )

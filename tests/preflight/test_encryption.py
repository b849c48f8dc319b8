"""check-config's checks of encryption, on real gpg keyrings: no encryption, a missing
gnupg_home, recipients missing from the keyring, not named by fingerprint, or unusable, and a
secret key where only encryption happens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gpg import BadKeys, GpgKey
from tests.preflight.helpers import Setup


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

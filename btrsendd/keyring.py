"""check-config's checks of ``[encryption]``: the keyring and the recipients' keys in it.

The keyring must be private (whoever can change it decides whom backups are encrypted to),
hold the recipients' public keys able to encrypt today, and no secret key (a stolen host
would expose every backup).  gpg runs with ``--no-options``, as it does for backups.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from btrsendd import permissions
from btrsendd.config import EncryptionConfig
from btrsendd.findings import Finding, error, private_dir, warning

_FINGERPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
_GPG_TIMEOUT = 30


def check(enc: EncryptionConfig) -> list[Finding]:
    """Findings for ``[encryption]``: the keyring, and each recipient's key in it."""
    if enc.mode == "none":
        return [
            warning(
                "encryption.mode",
                "backups are stored unencrypted: whoever can read the bucket can read every "
                'file; set mode = "gpg" and list recipients unless that is intended',
            )
        ]
    gpg = shutil.which("gpg")
    if gpg is None:
        return [error("encryption.mode", "gpg is not installed; install gnupg")]
    home = enc.gnupg_home
    if not home.is_dir():
        return [
            error(
                "encryption.gnupg_home",
                f"{home} does not exist; create it and import the recipients' public keys: "
                f"install -d -m 700 {home} && gpg --homedir {home} --import KEY.asc",
            )
        ]
    findings = private_dir("encryption.gnupg_home", home, permissions.GNUPG_HOME)
    findings += _secret_keys(home)
    for index, recipient in enumerate(enc.recipients):
        findings += _recipient(gpg, home, f"encryption.recipients[{index}]", recipient)
    return findings


def _secret_keys(home: Path) -> list[Finding]:
    """Warn when the keyring can decrypt: a stolen host would then expose every backup.

    Read from the key store on disk, not ``gpg --list-secret-keys``: that needs gpg-agent,
    and a check should neither start daemons nor depend on one running.
    """
    count = sum(1 for _ in (home / "private-keys-v1.d").glob("*.key"))
    if not count:
        return []
    return [
        warning(
            "encryption.gnupg_home",
            f"{home} holds {count} secret key(s); this host only encrypts and needs the "
            "recipients' public keys: keep the secret key offline for restores and remove it "
            f"here (gpg --homedir {home} --delete-secret-keys FINGERPRINT)",
        )
    ]


def _recipient(gpg: str, home: Path, key: str, recipient: str) -> list[Finding]:
    """The recipient's public key must be in the keyring and able to encrypt today."""
    findings = []
    if not _FINGERPRINT_RE.match(recipient):
        findings.append(
            warning(
                key,
                f"{recipient!r} is not a full fingerprint; name keys by fingerprint so no other "
                "key with a matching user id can be picked",
            )
        )
    argv = [gpg, "--no-options", "--homedir", str(home), "--batch", "--no-autostart"]
    argv += ["--with-colons"]
    argv += ["--list-keys", "--", recipient]
    try:
        listing = subprocess.run(
            argv, capture_output=True, text=True, timeout=_GPG_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [*findings, error(key, f"cannot run gpg to list {recipient}: {exc}")]
    pub = next(
        (line.split(":") for line in listing.stdout.splitlines() if line.startswith("pub:")), None
    )
    if listing.returncode != 0 or pub is None:
        return [
            *findings,
            error(
                key,
                f"no public key {recipient} in {home}; import it: "
                f"gpg --homedir {home} --import KEY.asc",
            ),
        ]
    validity, capabilities = pub[1], pub[11]
    if validity == "r":
        findings.append(
            error(
                key,
                f"key {recipient} is revoked; import the recipient's new key and list "
                "its fingerprint instead",
            )
        )
    elif validity == "e":
        findings.append(
            error(
                key,
                f"key {recipient} has expired; extend it where its secret key "
                f"lives (gpg --quick-set-expire FINGERPRINT 2y), then re-import it into {home}",
            )
        )
    elif "E" not in capabilities:
        findings.append(
            error(
                key,
                f"key {recipient} has no usable encryption subkey (expired, revoked or "
                "never made); add one (gpg --quick-add-key FINGERPRINT cv25519 encr) where "
                f"its secret key lives, then re-import it into {home}",
            )
        )
    return findings

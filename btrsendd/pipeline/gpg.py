"""Every gpg call btrsendd makes, and everything it reads from gpg's answers.

gpg runs in three places: as a stage of the codec (encrypting a volume to the recipients on
the backup host, decrypting it on the restore host), in check-config (the keyring and the
recipients' keys in it), and before a restore pays for anything (the keyring must hold a
private key the chain can be decrypted with).  Always with ``--no-options``: a gpg.conf in
the keyring could otherwise add recipients (``hidden-encrypt-to``) or change ciphers, and
whoever could write it would read every backup.  Always with ``--batch``: a daemon has no
one to ask.  Keys are read from gpg's colon listing (``--with-colons``, gnupg's
``doc/DETAILS``), in one parser, and named by the patterns below, in one place.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from btrsendd import permissions
from btrsendd.errors import OperationalError, UsageError
from btrsendd.findings import Finding, error, private_dir, warning
from btrsendd.pipeline.piper import Stage, find_tool

if TYPE_CHECKING:
    from btrsendd.config import EncryptionConfig
    from btrsendd.model import Backup

#: A full fingerprint, v4 (40 hex digits) or v5 (64): names exactly one key.
_FINGERPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
#: A key ID or fingerprint once spaces, ``0x`` and a trailing ``!`` are gone (``_key_id``).
_KEY_ID_RE = re.compile(r"^[0-9A-F]{8,}$")
#: Records of the colon listing that start a key or subkey; each is followed by its ``fpr``.
_KEY_RECORDS = frozenset({"pub", "sub", "sec", "ssb"})
_GPG_TIMEOUT = 30


def _argv(gpg: str, home: Path | None, *args: str) -> list[str]:
    """gpg with the options every call shares, on ``home`` (``None``: gpg's default)."""
    homedir = ["--homedir", str(home)] if home is not None else []
    return [gpg, "--no-options", "--batch", "--no-tty", *homedir, *args]


# -- the codec's stages ------------------------------------------------------------------------


def _stage(home: Path | None, operation: Sequence[str]) -> Stage:
    _, path = find_tool("gpg", ("gpg",), "gnupg")
    # --quiet keeps stderr, which errors quote, to real problems.
    return Stage("gpg", (*_argv(path, home, "--quiet"), *operation, "--output", "-"))


def encrypt_stage(home: Path | None, recipients: Sequence[str]) -> Stage:
    """gpg encrypting its stdin to ``recipients`` with the public keys in ``home``."""
    # The backup host holds public keys only, unsigned by any local key: trust them as
    # configured.  gpg's own compression is off because the input is already compressed.
    operation = ["--trust-model", "always", "--compress-algo", "none", "--encrypt"]
    stage = _stage(home, [*operation, *(arg for fpr in recipients for arg in ("--recipient", fpr))])
    if home is not None:
        # Whoever can change the keyring decides whom backups are encrypted to.
        permissions.secure(home, permissions.GNUPG_HOME)
    return stage


def decrypt_stage(home: Path | None) -> Stage:
    """gpg decrypting its stdin with a private key in ``home``."""
    # Loopback pinentry: a key with a passphrase fails at once instead of waiting for a
    # pinentry window nobody will ever see.
    return _stage(home, ["--pinentry-mode", "loopback", "--decrypt"])


# -- reading keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A key or subkey as gpg's colon listing describes it."""

    #: ``pub``/``sub`` (public key, subkey) or ``sec``/``ssb`` (with the private part).
    record: str
    #: Field 2: ``r`` revoked, ``e`` expired, ``-``/``u``/``f``... otherwise.
    validity: str
    #: Field 12.  For a primary key it sums up the whole key: an upper-case ``E`` means
    #: some subkey can encrypt today.
    capabilities: str
    fingerprint: str


def parse_keys(listing: str) -> list[Key]:
    """Every key and subkey in a ``--with-colons`` listing, in order, with its fingerprint."""
    keys = []
    started: list[str] | None = None
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] in _KEY_RECORDS:
            started = fields + [""] * (12 - len(fields))
        elif fields[0] == "fpr" and started is not None and len(fields) > 9:
            keys.append(Key(started[0], started[1], started[11], fields[9]))
            started = None
    return keys


def _key_id(recipient: str) -> str | None:
    """``recipient`` as the hex digits gpg's listing ends it with, if it is a key ID or
    fingerprint; None for a name or address, where only gpg itself can tell which key."""
    wanted = recipient.replace(" ", "").upper().removeprefix("0X").removesuffix("!")
    return wanted if _KEY_ID_RE.match(wanted) else None


def secret_fingerprints(home: Path | None) -> set[str]:
    """Fingerprints of every key and subkey whose private part the keyring holds."""
    argv = _argv("gpg", home, "--with-colons", "--list-secret-keys")
    try:
        listing = subprocess.run(argv, capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise OperationalError("gpg not found on PATH: install gnupg") from None
    # An empty or unreadable keyring lists nothing (and exits non-zero): it holds no keys.
    return {key.fingerprint for key in parse_keys(listing)}


def holds_key(recipient: str, secret: set[str]) -> bool | None:
    """Whether ``secret`` has the key for a recipient; None if the recipient is not a key ID
    or fingerprint (a name or address), where only gpg itself can tell."""
    wanted = _key_id(recipient)
    if wanted is None:
        return None
    return any(fpr.endswith(wanted) for fpr in secret)


def check_private_keys(chain: Sequence[Backup], gnupg_home: Path | None) -> None:
    """Refuse to start (and pay for retrievals) without a private key that can decrypt."""
    if not any(row.recipients for row in chain):
        return
    if gnupg_home is not None:
        if not gnupg_home.is_dir():
            raise UsageError(f"--gnupg-home {gnupg_home} is not a directory")
        # Before gpg first runs: listing secret keys already starts gpg-agent.
        permissions.refuse_changeable(gnupg_home, permissions.RESTORE_KEYRING)
    else:
        # gpg's own default, checked the same way: whoever can change it can run programs
        # as root through gpg-agent's configuration, whichever way it was named.
        default = Path(os.environ.get("GNUPGHOME") or Path.home() / ".gnupg")
        if default.is_dir():
            permissions.refuse_changeable(default, permissions.DEFAULT_KEYRING)
    secret = secret_fingerprints(gnupg_home)
    where = str(gnupg_home) if gnupg_home else "gpg's default keyring ($GNUPGHOME or ~/.gnupg)"
    for row in chain:
        held = [holds_key(r, secret) for r in row.recipients]
        if held and all(h is False for h in held):
            raise UsageError(
                f"{where} holds no private key for {', '.join(row.recipients)}, which backup "
                f"{row.id} ({row.date}) is encrypted to; point --gnupg-home (or GNUPGHOME) at "
                "the keyring with that private key"
            )


# -- check-config ------------------------------------------------------------------------------


def check_keyring(enc: EncryptionConfig) -> list[Finding]:
    """check-config's findings for ``[encryption]``: the keyring, and each recipient's key.

    The keyring must be private (whoever can change it decides whom backups are encrypted
    to), hold the recipients' public keys able to encrypt today, and no secret key (a stolen
    host would expose every backup).
    """
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


def _public_key(gpg: str, home: Path, recipient: str) -> Key | None:
    """The primary key gpg finds for ``recipient`` in ``home``; None if it finds none.

    ``--no-autostart``: listing public keys needs no gpg-agent, and a check starts none.
    """
    argv = _argv(gpg, home, "--no-autostart", "--with-colons", "--list-keys", "--", recipient)
    listing = subprocess.run(
        argv, capture_output=True, text=True, timeout=_GPG_TIMEOUT, check=False
    )
    if listing.returncode != 0:
        return None
    return next((key for key in parse_keys(listing.stdout) if key.record == "pub"), None)


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
    try:
        pub = _public_key(gpg, home, recipient)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [*findings, error(key, f"cannot run gpg to list {recipient}: {exc}")]
    if pub is None:
        return [
            *findings,
            error(
                key,
                f"no public key {recipient} in {home}; import it: "
                f"gpg --homedir {home} --import KEY.asc",
            ),
        ]
    if pub.validity == "r":
        findings.append(
            error(
                key,
                f"key {recipient} is revoked; import the recipient's new key and list "
                "its fingerprint instead",
            )
        )
    elif pub.validity == "e":
        findings.append(
            error(
                key,
                f"key {recipient} has expired; extend it where its secret key "
                f"lives (gpg --quick-set-expire FINGERPRINT 2y), then re-import it into {home}",
            )
        )
    elif "E" not in pub.capabilities:
        findings.append(
            error(
                key,
                f"key {recipient} has no usable encryption subkey (expired, revoked or "
                "never made); add one (gpg --quick-add-key FINGERPRINT cv25519 encr) where "
                f"its secret key lives, then re-import it into {home}",
            )
        )
    return findings

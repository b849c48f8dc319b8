"""gpg: the codec's stages, and keys read from real keyrings (the ``gpg_key`` and ``bad_keys``
fixtures), never from hand-written listings."""

from __future__ import annotations

import io
import subprocess
from datetime import date
from pathlib import Path

import pytest

from btrsendd.errors import PipelineError, UsageError
from btrsendd.model import Backup
from btrsendd.pipeline import gpg
from btrsendd.pipeline.codec import Codec, decode_volume, encode_stream
from tests.fixtures.gpg import BadKeys, GpgKey
from tests.pipeline.support import DATA, MemoryStore, MiB, child_processes, codec_for

# --- the codec's stages --------------------------------------------------------------------


def test_unknown_recipient_names_gpg(gpg_key: GpgKey) -> None:
    codec = Codec("gzip", 6, ("0" * 40,), gpg_key.public_home)
    store = MemoryStore()
    with pytest.raises(PipelineError) as info:
        encode_stream(io.BytesIO(DATA["random"]), codec, MiB, store)
    assert info.value.stage == "gpg"
    assert "No public key" in info.value.detail
    assert store.volumes == {}  # the failure reached the store as an error, not as an EOF
    assert child_processes() == []


@pytest.mark.parametrize("keyring", ["public only", "other key"])
def test_decode_without_the_secret_key_names_gpg(
    keyring: str, gpg_key: GpgKey, other_gpg_key: GpgKey
) -> None:
    codec = codec_for("gzip", gpg_key)
    store = MemoryStore()
    [vol] = encode_stream(io.BytesIO(DATA["compressible"][:MiB]), codec, MiB, store)
    home = gpg_key.public_home if keyring == "public only" else other_gpg_key.secret_home
    with pytest.raises(PipelineError) as info:
        decode_volume(io.BytesIO(store.volumes[vol.index]), codec, io.BytesIO(), gnupg_home=home)
    assert info.value.stage == "gpg"
    assert "No secret key" in info.value.detail
    assert child_processes() == []


def test_stages_encrypt_to_the_recipients_and_decrypt_with_their_key(gpg_key: GpgKey) -> None:
    """The two stages on their own: what one writes, only the recipient's keyring reads."""

    def run(argv: tuple[str, ...], data: bytes) -> bytes:
        return subprocess.run(argv, input=data, capture_output=True, check=True).stdout

    encrypted = run(gpg.encrypt_stage(gpg_key.public_home, [gpg_key.fingerprint]).argv, b"x" * 9)
    assert b"x" * 9 not in encrypted
    assert run(gpg.decrypt_stage(gpg_key.secret_home).argv, encrypted) == b"x" * 9


# --- keys, as gpg lists them ---------------------------------------------------------------


def listing(home: Path, *args: str) -> str:
    """gpg's own colon listing of ``home``, as a user would get it."""
    argv = ["gpg", "--homedir", str(home), "--batch", "--with-colons", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_a_key_pair_lists_its_primary_key_and_encryption_subkey(gpg_key: GpgKey) -> None:
    secret = gpg.parse_keys(listing(gpg_key.secret_home, "--list-secret-keys"))
    public = gpg.parse_keys(listing(gpg_key.public_home, "--list-keys"))

    assert [k.record for k in secret] == ["sec", "ssb"]
    assert [k.record for k in public] == ["pub", "sub"]
    assert secret[0].fingerprint == public[0].fingerprint == gpg_key.fingerprint
    assert secret[1].fingerprint == public[1].fingerprint != gpg_key.fingerprint
    assert "E" in public[0].capabilities  # the whole key can encrypt: its subkey can
    assert "e" in public[1].capabilities
    assert all(len(k.fingerprint) == 40 for k in secret)


def test_unusable_keys_say_why(bad_keys: BadKeys) -> None:
    keys = {
        k.fingerprint: k
        for k in gpg.parse_keys(listing(bad_keys.home, "--list-keys"))
        if k.record == "pub"
    }
    assert keys[bad_keys.expired].validity == "e"
    assert keys[bad_keys.revoked].validity == "r"
    assert "E" not in keys[bad_keys.sign_only].capabilities
    assert keys[bad_keys.sign_only].validity not in ("e", "r")


def test_secret_fingerprints(gpg_key: GpgKey, tmp_path: Path) -> None:
    secret = gpg.secret_fingerprints(gpg_key.secret_home)
    assert gpg_key.fingerprint in secret and len(secret) == 2  # the key and its subkey
    assert gpg.secret_fingerprints(gpg_key.public_home) == set()
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    assert gpg.secret_fingerprints(empty) == set()


def test_holds_key_by_fingerprint_or_key_id(gpg_key: GpgKey, other_gpg_key: GpgKey) -> None:
    secret = gpg.secret_fingerprints(gpg_key.secret_home)
    fpr = gpg_key.fingerprint
    spaced = " ".join(fpr[i : i + 4] for i in range(0, 40, 4))
    for recipient in (fpr, fpr.lower(), spaced, fpr[-16:], f"0x{fpr[-8:].lower()}", f"{fpr}!"):
        assert gpg.holds_key(recipient, secret) is True, recipient
    assert gpg.holds_key(other_gpg_key.fingerprint, secret) is False
    assert gpg.holds_key(other_gpg_key.fingerprint[-16:], secret) is False
    # A name or an address: only gpg itself can tell which key it means.
    assert gpg.holds_key("test@example.invalid", secret) is None
    assert gpg.holds_key("ABC", secret) is None  # too short for a key ID


def _encrypted_backup(recipients: tuple[str, ...]) -> Backup:
    return Backup(
        id="2000-01-01-full-000000",
        source="home",
        date=date(2000, 1, 1),
        kind="full",
        parent_id=None,
        parent_date=None,
        chain="2000-01-01-full-000000",
        state="complete",
        snapshot="2000-01-01",
        snapshot_uuid=None,
        parent_uuid=None,
        compression="zstd",
        recipients=recipients,
        storage_class="local",
        raw_bytes=1,
        stored_bytes=1,
        volume_count=1,
        created_at="2000-01-01T00:00:00+00:00",
        completed_at=None,
    )


def test_check_private_keys(gpg_key: GpgKey, other_gpg_key: GpgKey, tmp_path: Path) -> None:
    mine = [_encrypted_backup((gpg_key.fingerprint,))]
    gpg.check_private_keys(mine, gpg_key.secret_home)
    gpg.check_private_keys([_encrypted_backup(())], tmp_path / "missing")  # nothing to decrypt
    # One recipient that may be ours (a name) is enough to try.
    gpg.check_private_keys(
        [_encrypted_backup((other_gpg_key.fingerprint, "test@example.invalid"))],
        gpg_key.secret_home,
    )
    with pytest.raises(UsageError, match=f"holds no private key for {gpg_key.fingerprint}"):
        gpg.check_private_keys(mine, other_gpg_key.secret_home)
    with pytest.raises(UsageError, match="is not a directory"):
        gpg.check_private_keys(mine, tmp_path / "missing")

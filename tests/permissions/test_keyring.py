"""The gpg keyring cannot be turned against the backups: a gpg.conf planted in it adds no
recipient (gpg runs with ``--no-options``), one a local user could plant is refused, a keyring
open to others is tightened, and one someone else owns is refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.fixtures.gpg import GpgKey
from tests.permissions.helpers import (
    FIRST,
    NOBODY,
    as_nobody,
    keyring_copy,
    mode,
    one_error,
    use_keyring,
)
from tests.support.backups import events
from tests.support.world import World


def stored_volume(world: World) -> Path:
    [volume] = sorted((world.work / "archive").glob("data/*/vol-*.gpg"))
    return volume


def decrypts(home: Path, data: bytes) -> bool:
    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--decrypt"],
        input=data,
        capture_output=True,
    )
    return proc.returncode == 0


def test_a_gpg_conf_in_the_keyring_adds_no_recipient(
    world: World, other_gpg_key: GpgKey, tmp_path: Path
) -> None:
    """gpg.conf with ``hidden-encrypt-to ATTACKER`` (written while the keyring was open, the
    attacker's key imported beside it): every backup would have been readable by them."""
    attacker = other_gpg_key
    home = keyring_copy(world.key, tmp_path / "gnupg")
    exported = subprocess.run(
        ["gpg", "--homedir", str(attacker.public_home), "--export", attacker.fingerprint],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--import"], input=exported, check=True
    )
    (home / "gpg.conf").write_text(f"hidden-encrypt-to {attacker.fingerprint}\n")
    # The planted file works: plain gpg on this keyring encrypts to the attacker too.
    assert decrypts(attacker.secret_home, encrypt_plainly(home, world.key.fingerprint))
    use_keyring(world, home)

    world.run("backup", "--date", FIRST)

    volume = stored_volume(world).read_bytes()
    assert not decrypts(attacker.secret_home, volume)
    assert decrypts(world.key.secret_home, volume)


def encrypt_plainly(home: Path, recipient: str) -> bytes:
    """What plain gpg (reading gpg.conf) makes of ``home``: encrypt a test message."""
    argv = ["gpg", "--homedir", str(home), "--batch", "--trust-model", "always", "--encrypt"]
    return subprocess.run(
        [*argv, "--recipient", recipient], input=b"secret", capture_output=True, check=True
    ).stdout


def test_a_local_user_cannot_plant_options_in_an_open_keyring(
    world: World, other_gpg_key: GpgKey, open_place: Path
) -> None:
    home = keyring_copy(world.key, open_place / "gnupg")
    home.chmod(0o777)  # the careless admin
    drop = open_place / "drop"  # somewhere the attacker may write, like /tmp
    drop.mkdir()
    drop.chmod(0o1777)
    attacker_key = drop / "attacker.asc"
    attacker_key.write_bytes(
        subprocess.run(
            ["gpg", "--homedir", str(other_gpg_key.public_home), "--armor", "--export"],
            capture_output=True,
            check=True,
        ).stdout
    )
    attacker_key.chmod(0o644)
    # As nobody: a keyring of their own with their key, and a gpg.conf in the open keyring
    # that makes gpg read it and encrypt every message to that key as well.
    own = drop / "own"
    assert as_nobody("mkdir", "-m", "700", str(own)).returncode == 0
    imported = as_nobody(
        "gpg", "--homedir", str(own), "--batch", "--no-autostart", "--import", str(attacker_key)
    )
    assert imported.returncode == 0, imported.stderr
    conf = f"keyring {own}/pubring.kbx\nhidden-encrypt-to {other_gpg_key.fingerprint}\n"
    assert as_nobody("sh", "-c", f"cat > {home}/gpg.conf", stdin=conf.encode()).returncode == 0
    assert decrypts(other_gpg_key.secret_home, encrypt_plainly(home, world.key.fingerprint))
    use_keyring(world, home)

    line = one_error(world.run("backup", "--date", FIRST, check=False), 2)

    assert line.endswith(
        f"{home} holds gpg.conf, which belongs to user nobody: whoever else can change it can "
        "make gpg encrypt to their own key; remove what you did not put there, then "
        f"chown -R root:root {home} && chmod 700 {home}"
    )
    assert world.list() == []
    assert not list((world.work / "archive").glob("data/*/vol-*"))


def test_a_keyring_open_to_others_is_tightened(world: World, tmp_path: Path) -> None:
    home = keyring_copy(world.key, tmp_path / "gnupg")
    home.chmod(0o755)
    use_keyring(world, home)

    proc = world.run("backup", "--date", FIRST)

    assert mode(home) == 0o700
    [event] = events(proc, "permissions.tightened")
    assert (event["level"], event["directory"], event["old_mode"], event["new_mode"]) == (
        "warning",
        str(home),
        "0755",
        "0700",
    )
    assert [b["state"] for b in world.list()] == ["complete"]


def test_a_keyring_someone_else_owns_is_refused(world: World, tmp_path: Path) -> None:
    home = keyring_copy(world.key, tmp_path / "gnupg")
    os.chown(home, NOBODY, NOBODY)
    use_keyring(world, home)

    line = one_error(world.run("backup", "--date", FIRST, check=False), 2)

    assert f"{home} belongs to user nobody, not root" in line
    assert line.endswith(f"chown root:root {home} && chmod 700 {home}")
    assert world.list() == []

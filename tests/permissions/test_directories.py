"""The directories btrsendd trusts cannot be turned against the backups.

The gpg keyring: a gpg.conf planted in it adds no recipient, one a local user could plant is
refused, a keyring open to others is tightened and one someone else owns is refused.  The
state_dir and snapshot_dir: open ones are tightened (old snapshots included), ones someone
else owns or inside a directory others can write to are refused, and a snapshot planted in an
open snapshot_dir is never backed up.  check-config reports each of them and changes nothing.
"""

from __future__ import annotations

import os
import subprocess
from datetime import date
from pathlib import Path

from tests.fixtures.btrfs import MakeBtrfs
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


# -- gpg ---------------------------------------------------------------------------------------


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


# -- state_dir -------------------------------------------------------------------------------


def test_a_state_dir_open_to_others_is_tightened(world: World) -> None:
    state = world.work / "state"
    world.run("backup", "--date", FIRST)
    state.chmod(0o775)

    proc = world.run("list")

    assert mode(state) == 0o700
    [event] = events(proc, "permissions.tightened")
    assert (event["directory"], event["old_mode"], event["new_mode"]) == (
        str(state),
        "0775",
        "0700",
    )


def test_a_state_dir_someone_else_owns_is_refused(world: World) -> None:
    state = world.work / "state"
    world.run("backup", "--date", FIRST)
    os.chown(state, NOBODY, NOBODY)

    for command in (["list"], ["backup", "--date", "2000-01-07"], ["status"]):
        line = one_error(world.run(*command, check=False), 2)
        assert f"{state} belongs to user nobody, not root" in line
        assert "rewrite the catalog" in line


def test_a_state_dir_in_a_directory_others_can_write_to_is_refused(world: World) -> None:
    shared = world.work / "shared"
    shared.mkdir()
    state = shared / "state"
    world.write_config()
    world.config.write_text(world.config.read_text().replace(str(world.work / "state"), str(state)))
    world.run("backup", "--date", FIRST)
    shared.chmod(0o777)

    line = one_error(world.run("list", check=False), 2)

    assert line.startswith(
        f"btrsendd: error: {state} lies inside {shared}, which others can write to (mode 0777)"
    )
    # With the sticky bit (as on /tmp) nobody can rename what is not theirs.
    shared.chmod(0o1777)
    assert world.run("list").returncode == 0


# -- snapshot_dir ----------------------------------------------------------------------------


def test_old_snapshots_in_an_open_snapshot_dir_are_closed(open_world: World) -> None:
    world = open_world
    secret = world.source / "secret.txt"
    secret.write_text("once public\n")
    secret.chmod(0o644)
    world.source.chmod(0o755)
    # Left by an older btrsendd, or made by hand: an open snapshot directory, a snapshot in it.
    world.snapshots.mkdir(mode=0o755)
    world.snapshots.chmod(0o755)
    old = world.snapshots / FIRST
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(world.source), str(old)],
        check=True,
        capture_output=True,
    )
    secret.chmod(0o600)  # the owner makes the file private
    assert as_nobody("cat", str(secret)).returncode != 0
    assert as_nobody("cat", str(old / "secret.txt")).stdout == b"once public\n"

    proc = world.run("backup", "--date", "2000-01-02")

    assert mode(world.snapshots) == 0o700
    assert as_nobody("cat", str(old / "secret.txt")).returncode != 0
    [event] = events(proc, "permissions.tightened")
    assert (event["directory"], event["old_mode"], event["new_mode"]) == (
        str(world.snapshots),
        "0755",
        "0700",
    )
    assert "read every file of every snapshot" in event["detail"]


def test_a_snapshot_dir_someone_else_owns_is_refused(world: World) -> None:
    world.snapshots.mkdir(mode=0o700)
    os.chown(world.snapshots, NOBODY, NOBODY)

    line = one_error(world.run("backup", "--date", FIRST, check=False), 2)

    assert f"{world.snapshots} belongs to user nobody, not root" in line
    assert "plant a snapshot of their own" in line
    assert list(world.snapshots.iterdir()) == []
    assert world.list() == []


def test_a_new_snapshot_dir_is_private(world: World) -> None:
    world.run("backup", "--date", FIRST)

    assert mode(world.snapshots) == 0o700


def test_a_snapshot_planted_in_an_open_snapshot_dir_is_not_backed_up(
    open_world: World, make_btrfs: MakeBtrfs
) -> None:
    """While the directory was open, a local user made a read-only subvolume named for the
    next backup day, holding what they want backed up (or restored) in place of the source."""
    world = open_world
    (world.source / "file.txt").write_text("the real data\n")
    world.snapshots.mkdir()
    world.snapshots.chmod(0o777)
    planted = world.snapshots / "2000-01-07"
    made = as_nobody("btrfs", "subvolume", "create", str(planted))
    assert made.returncode == 0, made.stderr
    assert as_nobody("sh", "-c", f"echo planted > {planted}/file.txt").returncode == 0
    assert as_nobody("btrfs", "property", "set", str(planted), "ro", "true").returncode == 0

    world.run("backup", "--date", "2000-01-07")

    [backup] = world.list()
    assert backup["snapshot"] == "2000-01-07.1"
    assert mode(world.snapshots) == 0o700
    target = make_btrfs("restore")
    world.run(*world.restore_args(date(2000, 1, 7), target))
    assert (target / "2000-01-07.1" / "file.txt").read_text() == "the real data\n"


# -- check-config ----------------------------------------------------------------------------


def test_check_config_reports_each_directory(world: World, tmp_path: Path) -> None:
    home = keyring_copy(world.key, tmp_path / "gnupg")
    home.chmod(0o755)
    use_keyring(world, home)
    world.snapshots.mkdir(mode=0o755)
    world.snapshots.chmod(0o755)
    state = world.work / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)

    proc = world.run("check-config", check=False)

    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert any(
        line.startswith(f"btrsendd: error: state_dir: {state} belongs to user nobody")
        for line in lines
    ), lines
    assert any(
        line.startswith(f"btrsendd: warning: encryption.gnupg_home: {home} has mode 0755")
        for line in lines
    ), lines
    assert any(
        line.startswith(
            f"btrsendd: warning: sources[0].snapshot_dir (name = 'data'): {world.snapshots}"
        )
        and "others can read every file of every snapshot" in line
        for line in lines
    ), lines
    # check-config only reports; the commands tighten.
    assert (mode(home), mode(world.snapshots)) == (0o755, 0o755)

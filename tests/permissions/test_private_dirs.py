"""btrsendd's own directories stay private: a state_dir or snapshot_dir open to others is
tightened (old snapshots included), one someone else owns or one inside a directory others can
write to is refused, a snapshot planted in an open snapshot_dir is never backed up, and
check-config reports each of them without changing anything."""

from __future__ import annotations

import os
import subprocess
from datetime import date
from pathlib import Path

from tests.fixtures.btrfs import MakeBtrfs
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
        line.startswith(f"error: state_dir: {state} belongs to user nobody") for line in lines
    ), lines
    assert any(
        line.startswith(f"warning: encryption.gnupg_home: {home} has mode 0755") for line in lines
    ), lines
    assert any(
        line.startswith(f"warning: sources[0].snapshot_dir (name = 'data'): {world.snapshots}")
        and "others can read every file of every snapshot" in line
        for line in lines
    ), lines
    # check-config only reports; the commands tighten.
    assert (mode(home), mode(world.snapshots)) == (0o755, 0o755)


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

"""Restore on a host with other users: what they can change never steers root.

A restore runs as root, with a keyring named on the command line and paths in directories
others may write to.  Each test plants what such a user could, runs the real restore, and
checks that it neither ran their code, nor wrote where they pointed it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.support.backups import error_lines, try_restore
from tests.support.trees import assert_same_tree, populate
from tests.support.world import BTRSENDD, World, local_world

DAY = date(2000, 1, 1)
NOBODY = 65534


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source)
    w.run("backup", "--date", DAY.isoformat())
    return w


@pytest.fixture
def users_keyring(gpg_key: GpgKey, tmp_path: Path) -> Iterator[Path]:
    """A copy of the private keyring that another user owns, as on a stick or in a home."""
    home = tmp_path / "users-gnupg"
    shutil.copytree(
        gpg_key.secret_home, home, ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*")
    )
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


def test_keyring_another_user_can_change_is_refused(
    world: World, users_keyring: Path, make_btrfs: MakeBtrfs, tmp_path: Path
) -> None:
    # gpg-agent reads gpg-agent.conf from the keyring even under gpg --no-options: whoever
    # can write it can make root write its log anywhere, or run their scdaemon-program.
    log = tmp_path / "written-by-root"
    (users_keyring / "gpg-agent.conf").write_text(f"log-file {log}\n")
    for path in [users_keyring, *users_keyring.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    target = make_btrfs("dst")

    proc = try_restore(world, DAY, target, home=users_keyring)
    assert proc.returncode == 2, proc.stderr.decode()
    [line] = error_lines(proc)
    assert f"{users_keyring} belongs to user nobody" in line
    assert "gpg-agent" in line
    assert not log.exists()
    assert list(target.iterdir()) == []

    # Root's own copy of it works.
    for path in [users_keyring, *users_keyring.rglob("*")]:
        os.lchown(path, 0, 0)
    (users_keyring / "gpg-agent.conf").unlink()
    proc = try_restore(world, DAY, target, home=users_keyring)
    assert proc.returncode == 0, proc.stderr.decode()
    assert_same_tree(world.snapshots / DAY.isoformat(), target / DAY.isoformat())


def test_keyring_others_can_write_is_refused(
    world: World, users_keyring: Path, make_btrfs: MakeBtrfs
) -> None:
    users_keyring.chmod(0o777)
    target = make_btrfs("dst")
    proc = try_restore(world, DAY, target, home=users_keyring)
    assert proc.returncode == 2, proc.stderr.decode()
    [line] = error_lines(proc)
    assert f"{users_keyring} has mode 0777" in line
    assert list(target.iterdir()) == []


#: What a user who can write to the shared target does (as root here only because the test's
#: directories are closed to others): wait for the restored day to appear, move it aside and
#: leave their symlink to ``victim`` under its name, as fast as they can.
SWAPPER = """
import os, sys, time
path, victim, uid = sys.argv[1:]
deadline = time.monotonic() + 120
while not os.path.lexists(path):
    if time.monotonic() > deadline:
        sys.exit("the restored day never appeared")
    time.sleep(0.0002)
os.rename(path, path + ".moved")
os.symlink(victim, path)
os.lchown(path, int(uid), int(uid))
"""


def test_writable_copy_is_made_of_what_was_restored(
    world: World, gpg_key: GpgKey, make_btrfs: MakeBtrfs
) -> None:
    fs = make_btrfs("dst")
    private = fs / "private"
    private.mkdir(mode=0o700)
    secret = make_subvolume(private / "alice")
    (secret / "secret.txt").write_text("alice's, behind a directory only root can enter\n")
    shared = fs / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # a team's restore area, without the sticky bit
    writable = shared / "work"

    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(shared / DAY.isoformat()), str(secret), str(NOBODY)],
        stderr=subprocess.PIPE,
    )
    try:
        proc = world.run(*world.restore_args(DAY, shared), "--writable", str(writable), check=False)
        _, err = swapper.communicate(timeout=150)
    finally:
        swapper.kill()
        swapper.wait()
    assert swapper.returncode == 0, err.decode()
    assert not (writable / "secret.txt").exists(), "root copied alice's subvolume for nobody"
    assert proc.returncode == 0, proc.stderr.decode()
    assert_same_tree(world.snapshots / DAY.isoformat(), writable)


def test_a_lock_someone_holds_on_a_shared_target_does_not_stop_restores(
    world: World, make_btrfs: MakeBtrfs
) -> None:
    shared = make_btrfs("dst") / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    # Anyone who can read a directory can flock it, for as long as they like.
    fd = os.open(shared, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = try_restore(world, DAY, shared)
        assert proc.returncode == 0, proc.stderr.decode()
    finally:
        os.close(fd)
    assert_same_tree(world.snapshots / DAY.isoformat(), shared / DAY.isoformat())

    # Two restores into one target still run one at a time: the lock is btrsendd's own.
    other = make_btrfs("dst2")
    [lock] = (world.work / "state").glob("restore-*.lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"btrsendd restore (pid 12345)\n", 0)
        elsewhere = try_restore(world, DAY, other)
        assert elsewhere.returncode == 0, "another target is not locked"
        (shared / DAY.isoformat()).rename(shared / "first")
        proc = try_restore(world, DAY, shared)
        assert proc.returncode == 1
        [line] = error_lines(proc)
        assert line.endswith(
            f"btrsendd restore (pid 12345) is writing into {shared}; wait for it to finish"
        )
    finally:
        os.close(fd)


def test_default_keyring_another_user_can_change_is_refused(
    world: World, users_keyring: Path, make_btrfs: MakeBtrfs
) -> None:
    # The same keyring named by GNUPGHOME instead of --gnupg-home: checked all the same.
    users_keyring.chmod(0o777)
    target = make_btrfs("dst")
    args = [a for a in world.restore_args(DAY, target) if a != str(world.key.secret_home)]
    args.remove("--gnupg-home")
    world.env["GNUPGHOME"] = str(users_keyring)
    proc = world.run(*args, check=False)
    assert proc.returncode == 2, proc.stderr.decode()
    [line] = error_lines(proc)
    assert f"{users_keyring} has mode 0777" in line
    assert list(target.iterdir()) == []


def test_target_swapped_while_the_admin_reads_the_plan(world: World, make_btrfs: MakeBtrfs) -> None:
    # The target is checked when the restore starts and written to after the plan is read
    # and confirmed (or after a thaw of hours).  Meanwhile a user who can write to its parent
    # renames it and puts a symlink to their pick in its place: the restore still goes into
    # the directory that was checked.
    shared = make_btrfs("dst") / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    target = shared / "target"
    target.mkdir()
    elsewhere = make_btrfs("elsewhere")
    args = [a for a in world.restore_args(DAY, target) if a != "--yes"]
    main, terminal = pty.openpty()
    # The admin's terminal: the plan, the question (Python asks on stderr) and the answer.
    proc = subprocess.Popen(
        [BTRSENDD, "--config", str(world.config), "--log-format", "json", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **world.env},
    )
    os.close(terminal)
    seen = b""
    while b"Proceed?" not in seen:
        seen += os.read(main, 4096)
    target.rename(shared / "moved")
    plant(target, elsewhere)
    os.write(main, b"y\n")
    try:
        while os.read(main, 4096):  # what it says from here on; EIO once it has exited
            pass
    except OSError:
        pass
    assert proc.wait(timeout=120) == 0
    os.close(main)
    assert list(elsewhere.iterdir()) == []
    assert_same_tree(world.snapshots / DAY.isoformat(), shared / "moved" / DAY.isoformat())


def plant(link: Path, pointing_to: Path) -> None:
    link.symlink_to(pointing_to)
    os.lchown(link, NOBODY, NOBODY)

"""What a user who can write inside a backed-up source (their home under /home) can do to it.

Any such user can create directories and, on btrfs, subvolumes there.  They can keep their
own files out of the backups that way (a nested subvolume is in none), but never stop the
backups of everyone else's files, nor put what they like on the admin's terminal.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import btrfsutil
import pytest

from btrsendd.pipeline.btrfs import fd_path
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.backups import events
from tests.support.trees import populate
from tests.support.world import World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source)
    return w


def check_config(world: World) -> subprocess.CompletedProcess[bytes]:
    return world.run("check-config", check=False)


def test_a_subvolume_btrfs_cannot_name_does_not_stop_backups(world: World) -> None:
    """A subvolume under directories whose path is longer than btrfs can look up (4,080
    bytes): listing the nested subvolumes failed, and with it every backup of the source.
    The long path is inside a nested subvolume, which btrfs send does not enter (a path that
    long in the source itself is more than btrfs send can send at all)."""
    named = world.source / "cache"
    btrfsutil.create_subvolume(named)
    fd = os.open(named, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(20):
        os.mkdir("n" * 250, dir_fd=fd)
        deeper = os.open("n" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    btrfsutil.create_subvolume(fd_path(fd, "hidden"))
    os.close(fd)

    proc = check_config(world)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    out = proc.stderr.decode()
    assert f"2 subvolume(s) nested in {world.source}" in out
    assert f": {named} and 1 that btrfs cannot name (nested too deep);" in out

    proc = world.run("backup", "--date", "2000-01-01")
    [event] = events(proc, "backup.nested_subvolumes")
    assert event["paths"] == [str(named)] and event["unnamed"] == 1
    assert [b["state"] for b in world.list()] == ["complete"]


def test_names_users_chose_reach_the_terminal_quoted(world: World) -> None:
    """A nested subvolume's name is the user's: an escape sequence or a newline in it must
    not reach the admin's terminal as such (a cleared screen, a forged line)."""
    odd = world.source / "x\x1b[2J\nerror: everything is fine"
    btrfsutil.create_subvolume(odd)
    proc = check_config(world)
    text = proc.stderr.decode()
    assert "\x1b" not in text
    forged = ("error: ", "btrsendd: error: ")
    assert [line for line in text.splitlines() if line.startswith(forged)] == []
    assert repr(str(odd)) in text


def test_a_deep_tree_in_the_source_is_compared_by_verify_deep(world: World) -> None:
    """2,000 nested directories (a path under 4,096 bytes, so btrfs send takes it): the
    comparison of verify --deep overflowed Python's stack, or met paths too long to name."""
    fd = os.open(world.source, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(2000):
        os.mkdir("d", dir_fd=fd)
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("deep down\n")
    os.close(fd)
    world.run("backup", "--date", "2000-01-01")

    proc = world.run("verify", "--deep", "--gnupg-home", str(world.key.secret_home), check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "equals the local snapshot" in out

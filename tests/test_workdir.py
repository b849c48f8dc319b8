"""Restore stays inside its target: its clean-up touches only what it created.

A restore target can be a shared directory other users write to.  Each test plants what such a
user (or a careless admin) could, runs a real restore into the target, and checks that the
restore still works and that nothing it did not create was touched.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.support.backups import events
from tests.support.faults import faulty_zstd, kill_all, start
from tests.support.trees import assert_same_tree, populate
from tests.support.world import World, local_world

DAY = date(2000, 1, 1)
NOBODY = 65534


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source, big=3 * 1024**2)  # several 1 MiB volumes
    w.run("backup", "--date", DAY.isoformat())
    return w


@pytest.fixture
def target(make_btrfs: MakeBtrfs) -> Path:
    """A shared restore target: world-writable, as /srv/restore on a team's server might be."""
    shared = make_btrfs("dst") / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    return shared


def victim(fs: Path, name: str = "victim") -> Path:
    """A subvolume holding someone's data, which no restore may delete."""
    sub = make_subvolume(fs / name)
    (sub / "data.txt").write_text("not btrsendd's to delete\n")
    return sub


def plant(link: Path, pointing_to: Path) -> None:
    """A symlink as an unprivileged user would plant it."""
    link.symlink_to(pointing_to)
    os.lchown(link, NOBODY, NOBODY)


def restored_ok(world: World, target: Path) -> list[str]:
    """Restore the day into ``target``; it must equal the snapshot.  Returns the warnings."""
    proc = world.run(*world.restore_args(DAY, target), "--tier", "Bulk")
    assert_same_tree(world.snapshots / DAY.isoformat(), target / DAY.isoformat())
    return [e["event"] for e in events(proc, "restore.leftover_ignored")] + [
        e["event"] for e in events(proc, "restore.leftover_removed")
    ]


def test_symlink_named_like_a_working_directory_is_not_followed(
    world: World, target: Path, make_btrfs: MakeBtrfs
) -> None:
    elsewhere = make_btrfs("elsewhere")
    far = victim(elsewhere)
    # One leading to another filesystem, one to a directory on the target's own filesystem.
    near_dir = target.parent / "private"
    near_dir.mkdir()
    near = victim(near_dir)
    plant(target / ".btrsendd-restore-x", elsewhere)
    plant(target / ".btrsendd-restore-y", near_dir)

    assert restored_ok(world, target) == ["restore.leftover_ignored"] * 2
    for sub in (far, near):
        assert (sub / "data.txt").read_text() == "not btrsendd's to delete\n"
    assert (target / ".btrsendd-restore-x").is_symlink()


def test_directory_btrsendd_did_not_create_is_left_alone(world: World, target: Path) -> None:
    planted = target / ".btrsendd-restore-planted"
    planted.mkdir(mode=0o700)
    sub = victim(planted)
    assert restored_ok(world, target) == ["restore.leftover_ignored"]
    assert (sub / "data.txt").exists()


def kill_restore_mid_way(world: World, target: Path) -> Path:
    """Kill a restore (and its children) while it receives volume 1; returns its workdir."""
    counter = faulty_zstd(world, nth=2, action="sleep 600")
    with open(world.work / "restore.log", "wb") as log:
        proc = start(world, *world.restore_args(DAY, target), stderr=log)
        deadline = time.monotonic() + 60
        while not (counter.exists() and counter.read_text().strip() == "2"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        kill_all(proc)
    world.env.pop("PATH")
    [workdir] = [p for p in target.iterdir() if p.name.startswith(".btrsendd-restore-")]
    return workdir


def test_killed_restore_leaves_a_working_directory_the_next_one_removes(
    world: World, target: Path, tmp_path: Path
) -> None:
    workdir = kill_restore_mid_way(world, target)
    assert [p.name for p in workdir.iterdir()] == [DAY.isoformat()]  # half received
    # A reboot in between: the filesystem is mounted again, its subvolumes' device numbers
    # change, and the dead restore's directory is still recognised.
    mnt = target.parent
    subprocess.run(["umount", str(mnt)], check=True)
    subprocess.run(["mount", "-o", "loop", str(tmp_path / "dst.img"), str(mnt)], check=True)
    assert restored_ok(world, target) == ["restore.leftover_removed"]
    assert [p.name for p in target.iterdir()] == [DAY.isoformat()]


def test_working_directory_swapped_for_another_is_left_alone(world: World, target: Path) -> None:
    workdir = kill_restore_mid_way(world, target)
    # Someone who can write to the target moves the dead restore's directory away and puts
    # one of theirs, holding a subvolume, under its name.
    workdir.rename(target / "moved-away")
    workdir.mkdir(mode=0o700)
    sub = victim(workdir)
    assert restored_ok(world, target) == ["restore.leftover_ignored"]
    assert (sub / "data.txt").exists()
    subprocess.run(["btrfs", "subvolume", "delete", str(sub)], check=True, capture_output=True)


def test_snapshot_dir_is_refused_as_a_target(world: World) -> None:
    # An admin restoring next to the snapshots: retention would later delete the restored
    # day, which is named and made like a snapshot.  Refused before anything is spent.
    for args in (
        world.restore_args(DAY, world.snapshots),
        [*world.restore_args(DAY, world.root), "--writable", str(world.snapshots / "rw")],
    ):
        proc = world.run(*args, check=False)
        assert proc.returncode == 2
        assert "inside snapshot_dir" in proc.stderr.decode()
    assert sorted(p.name for p in world.snapshots.iterdir()) == [DAY.isoformat()]

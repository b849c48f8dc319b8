"""Bad input and hostile conditions: one clear message, the right exit status, nothing lost.

Every case starts from a world with one good backup, meets one problem, and must end with a
single ``btrsendd: error:`` line (no traceback) and that first backup still restoring exactly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from btrsendd.catalog_schema import SCHEMA_VERSION
from tests.fixtures.btrfs import MakeBtrfs, mounted_tmpfs
from tests.fixtures.gpg import BadKeys, GpgKey
from tests.support.trees import assert_same_tree
from tests.support.world import World, local_world, make_world

FIRST = "2000-01-01"


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src", size="400M"), tmp_path, gpg_key)
    (w.source / "precious.txt").write_text("the only copy\n" * 1000)
    w.run("backup", "--date", FIRST)
    return w


@pytest.fixture
def restores(world: World, make_btrfs: MakeBtrfs) -> Iterator[None]:
    """After the test body: the first backup still restores exactly."""
    yield
    world.env.pop("PATH", None)
    target = make_btrfs("check")
    world.restore(date.fromisoformat(FIRST), target)
    assert_same_tree(world.snapshots / FIRST, target / FIRST)


def fails(world: World, *args: str, status: int = 1) -> str:
    """Run a command that must fail; return its one error line."""
    proc = world.run(*args, check=False)
    text = proc.stderr.decode()
    assert proc.returncode == status, text
    assert "Traceback" not in text and "internal error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("btrsendd: error:")]
    assert len(errors) == 1, text
    return errors[0]


def only_programs(world: World, *programs: str) -> None:
    """PATH holding just ``programs``, as on a machine where the rest is not installed."""
    bin_dir = world.work / "only-bin"
    bin_dir.mkdir()
    for program in programs:
        found = shutil.which(program)
        assert found is not None
        (bin_dir / program).symlink_to(found)
    world.env["PATH"] = str(bin_dir)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "2m") as mnt:
        yield mnt


def fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory``; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.usefixtures("restores")
def test_state_dir_disk_full(world: World, tiny_tmpfs: Path) -> None:
    state = tiny_tmpfs / "state"
    shutil.copytree(world.work / "state", state)
    world.config.write_text(world.config.read_text().replace(str(world.work / "state"), str(state)))
    filler = fill(tiny_tmpfs)
    line = fails(world, "backup", "--date", "2000-01-07")
    assert "full" in line.lower()
    filler.unlink()
    world.run("backup", "--date", "2000-01-07")
    assert [b["state"] for b in world.list()] == ["complete", "complete"]
    # Hand the state back to the disk it came from before the tmpfs goes away.
    shutil.copytree(state, world.work / "state", dirs_exist_ok=True)
    world.write_config()


@pytest.mark.usefixtures("restores")
def test_snapshot_filesystem_full(world: World) -> None:
    filler = fill(world.source)
    proc = world.run("backup", "--date", "2000-01-07", check=False)
    # btrfs keeps a metadata reserve, so the snapshot may still succeed; either way the
    # outcome is a complete backup or one clear error, never a half state.
    if proc.returncode:
        assert proc.stderr.decode().count("btrsendd: error:") == 1
    filler.unlink()
    assert {b["state"] for b in world.list()} == {"complete"}


@pytest.mark.usefixtures("restores")
def test_source_deleted(world: World) -> None:
    subprocess.run(
        ["btrfs", "subvolume", "delete", str(world.source)], check=True, capture_output=True
    )
    line = fails(world, "backup", "--date", "2000-01-07", status=2)
    assert str(world.source) in line


@pytest.mark.usefixtures("restores")
def test_source_replaced_by_a_plain_directory(world: World) -> None:
    world.source.rename(world.root / "moved")
    world.source.mkdir()
    line = fails(world, "backup", "--date", "2000-01-07", status=2)
    assert "not a btrfs subvolume" in line


def test_snapshot_dir_removed(world: World, make_btrfs: MakeBtrfs) -> None:
    keep = world.root / "kept-snapshot"
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(world.snapshots / FIRST), str(keep)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["btrfs", "subvolume", "delete", str(world.snapshots / FIRST)],
        check=True,
        capture_output=True,
    )
    world.snapshots.rmdir()
    proc = world.run("backup", "--date", "2000-01-07")
    assert b"backup.parent_missing" in proc.stderr
    assert [b["kind"] for b in world.list()] == ["full", "full"]
    target = make_btrfs("check")
    world.restore(date.fromisoformat(FIRST), target)
    assert_same_tree(keep, target / FIRST)


@pytest.mark.usefixtures("restores")
@pytest.mark.parametrize("which", ["expired", "revoked"])
def test_unusable_gpg_key(world: World, bad_keys: BadKeys, which: str) -> None:
    world.encryption = (
        f'mode = "gpg"\nrecipients = ["{getattr(bad_keys, which)}"]\ngnupg_home = "{bad_keys.home}"'
    )
    world.write_config()
    line = fails(world, "backup", "--date", "2000-01-07")
    assert "gpg" in line
    assert [b["date"] for b in world.list()] == [FIRST]


@pytest.mark.usefixtures("restores")
def test_gpg_keyring_missing(world: World) -> None:
    world.encryption = (
        f'mode = "gpg"\nrecipients = ["{world.key.fingerprint}"]\n'
        f'gnupg_home = "{world.work / "no-such-keyring"}"'
    )
    world.write_config()
    line = fails(world, "backup", "--date", "2000-01-07")
    assert "gpg" in line


@pytest.mark.usefixtures("restores")
@pytest.mark.parametrize(
    ("missing", "present"), [("zstd", ("btrfs", "gpg")), ("gpg", ("btrfs", "zstd"))]
)
def test_program_missing(world: World, missing: str, present: tuple[str, ...]) -> None:
    only_programs(world, *present)
    line = fails(world, "backup", "--date", "2000-01-07")
    assert missing in line and "install" in line
    assert [b["date"] for b in world.list()] == [FIRST]


@pytest.mark.usefixtures("restores")
def test_clock_moved_backwards(world: World) -> None:
    world.run("backup", "--date", "2000-01-07")
    line = fails(world, "backup", "--date", "2000-01-05")
    assert "clock" in line and "2000-01-07" in line
    assert not (world.snapshots / "2000-01-05").exists()


@pytest.mark.usefixtures("restores")
def test_corrupt_catalog(world: World) -> None:
    db = world.work / "state" / "catalog.db"
    saved = db.read_bytes()
    with open(db, "r+b") as f:
        f.seek(100)
        f.write(os.urandom(2000))
    line = fails(world, "list")
    assert "catalog rebuild" in line
    db.write_bytes(saved)


@pytest.mark.usefixtures("restores")
def test_truncated_catalog(world: World) -> None:
    db = world.work / "state" / "catalog.db"
    saved = db.read_bytes()
    os.truncate(db, 4096 + 100)
    line = fails(world, "backup", "--date", "2000-01-07")
    assert "catalog" in line
    db.write_bytes(saved)


@pytest.mark.usefixtures("restores")
def test_catalog_from_a_newer_version(world: World) -> None:
    db = sqlite3.connect(world.work / "state" / "catalog.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    line = fails(world, "list")
    assert "newer btrsendd" in line and "upgrade" in line
    db = sqlite3.connect(world.work / "state" / "catalog.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.close()


@pytest.mark.usefixtures("restores")
def test_two_processes_at_once(world: World) -> None:
    fd = os.open(world.work / "state" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"btrsendd backup (pid 12345)\n", 0)
        line = fails(world, "backup", "--date", "2000-01-07")
        assert "in use by btrsendd backup (pid 12345)" in line
    finally:
        os.close(fd)
    world.run("backup", "--date", "2000-01-07")


def _s3(server: Any, world: World, bucket: str) -> None:
    world.storage = (
        f'backend = "s3"\nbucket = "{bucket}"\nendpoint_url = "{server.endpoint_url}"\n'
        'storage_class = "STANDARD"'
    )
    world.write_config()


def test_bucket_missing(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path, seaweedfs_server: Any
) -> None:
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, "")
    _s3(seaweedfs_server, w, "no-such-bucket-here")
    line = fails(w, "backup", "--date", FIRST)
    assert "no-such-bucket-here" in line or "NoSuchBucket" in line
    check = w.run("check-config", check=False)
    assert check.returncode == 2 and b"no-such-bucket-here" in check.stderr
    assert [b for b in w.list() if b["state"] == "complete"] == []


def test_wrong_credentials(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path, seaweedfs_server: Any
) -> None:
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, "")
    _s3(seaweedfs_server, w, seaweedfs_server.new_bucket())
    w.run("backup", "--date", FIRST)
    w.env["AWS_SECRET_ACCESS_KEY"] = "definitely-wrong"
    line = fails(w, "backup", "--date", "2000-01-07")
    assert "definitely-wrong" not in line  # credentials never reach messages
    assert "credential" in line.lower() or "denied" in line.lower() or "403" in line
    w.env.pop("AWS_SECRET_ACCESS_KEY")
    # The refused backup may stay `uploading` (its clean-up was refused too); never complete.
    assert [b["state"] for b in w.list() if b["date"] == FIRST] == ["complete"]
    w.run("backup", "--date", "2000-01-07")
    assert [b["state"] for b in w.list()] == ["complete", "complete"]
    target = make_btrfs("check")
    w.restore(date.fromisoformat(FIRST), target)
    assert_same_tree(w.snapshots / FIRST, target / FIRST)

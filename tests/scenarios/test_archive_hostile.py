"""A local archive others can write to (a NAS share, a group's directory) never steers root.

Whoever can write to the archive can destroy the backups in it: nothing stops that.  What
must hold is that they gain nothing more: btrsendd, running as root, never writes, reads or
deletes anything outside the archive because of what they put in it (a symlink in place of
a directory or an object), and never hangs on it (a FIFO in place of an object).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.backups import back_up, error_lines, events, world_storage
from tests.support.faults import faulty_zstd, kill_all, start
from tests.support.trees import mutate, populate
from tests.support.world import BTRSENDD, World, local_world, make_world, storage_section

DAYS = [date(2000, 1, 1), date(2000, 1, 7)]  # backup days of the default schedule
NOBODY = 65534


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    back_up(w, DAYS)
    return w


def victim(tmp_path: Path) -> dict[str, bytes]:
    """Someone's files outside the archive, named like what btrsendd writes and cleans up."""
    files = {
        "passwd": b"root:x:0:0\n",
        "manifest.json": b"{}",
        ".tmp-vol-00000.btrfs": b"not a temporary file of btrsendd's",
        "sub/vol-00000.btrfs.zst.gpg": b"someone's file",
        "2000-01-01-full-abcdef/vol-00000.btrfs.zst.gpg": b"someone's file",
    }
    for name, content in files.items():
        path = tmp_path / "victim" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def assert_intact(tmp_path: Path, files: dict[str, bytes]) -> None:
    root = tmp_path / "victim"
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert found == files


def plant(link: Path, pointing_to: Path) -> None:
    """Replace ``link`` (a directory or file of the archive) by a symlink, as its writer could."""
    link.rename(link.with_name(link.name + ".moved"))
    link.symlink_to(pointing_to)
    os.lchown(link, NOBODY, NOBODY)


def test_symlinked_source_directory_is_not_followed(world: World, tmp_path: Path) -> None:
    files = victim(tmp_path)
    plant(world.work / "archive" / "data", tmp_path / "victim")

    proc = world.run("verify", "--clean", check=False)
    assert proc.returncode == 1
    assert_intact(tmp_path, files)

    mutate(world.source, 5)
    proc = world.run("backup", "--date", "2000-01-14", check=False)
    assert proc.returncode == 1
    assert_intact(tmp_path, files)
    complete = [b["date"] for b in world.list() if b["state"] == "complete"]
    assert complete == ["2000-01-01", "2000-01-07"]


def test_symlinked_backup_directory_is_not_followed(world: World, tmp_path: Path) -> None:
    files = victim(tmp_path)
    full = world.list()[0]
    plant(world.work / "archive" / "data" / full["id"], tmp_path / "victim")

    world.run("verify", "--clean", check=False)
    assert_intact(tmp_path, files)
    # Forgetting the chain deletes its objects: never through the symlink.
    world.run("forget", "--source", "data", "--date", DAYS[0].isoformat(), "--yes", check=False)
    assert_intact(tmp_path, files)


def run_briefly(world: World, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The real command line, which must finish within a minute."""
    return subprocess.run(
        [BTRSENDD, "--config", str(world.config), "--log-format", "json", *args],
        capture_output=True,
        timeout=60,
    )


def test_fifo_in_place_of_an_object_does_not_hang(world: World, make_btrfs: MakeBtrfs) -> None:
    full, inc = world.list()
    data = world.work / "archive" / "data"
    manifest = data / inc["id"] / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    volume = data / full["id"] / "vol-00000.btrfs.zst.gpg"
    volume.unlink()
    os.mkfifo(volume)

    proc = run_briefly(world, "verify")
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert f"backup {full['id']} (2000-01-01), volume 0 " in out
    assert "missing from storage" in out

    target = make_btrfs("dst")
    proc = run_briefly(world, *world.restore_args(DAYS[0], target))
    assert proc.returncode == 1
    [line] = error_lines(proc)
    assert "volume 0" in line and "missing from storage" in line
    assert list(target.iterdir()) == []

    proc = run_briefly(world, "catalog", "rebuild", "--force")
    assert proc.returncode == 1
    assert error_lines(proc) == [
        f"btrsendd: warning: skipped data/{full['id']}/manifest.json: backup {full['id']} "
        "(data 2000-01-01): volume 0 missing"
    ]


@pytest.fixture
def deep_tree(world: World) -> Iterator[None]:
    """5,000 nested directories with a file at the bottom, in the archive (made through
    descriptors, as no path could name the deepest), removed the same way afterwards:
    shutil.rmtree, pytest's too, overflows Python's stack on them."""
    fds = [os.open(world.work / "archive" / "data", os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(5000):
            os.mkdir("d", dir_fd=fds[-1])
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        with open(os.open("stray", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fds[-1]), "wb") as f:
            f.write(b"deep down")
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink("stray", dir_fd=fds[-1])
        for fd, parent in zip(reversed(fds[1:]), reversed(fds[:-1]), strict=True):
            os.close(fd)
            os.rmdir("d", dir_fd=parent)
        os.close(fds[0])


@pytest.mark.usefixtures("deep_tree")
def test_deeply_nested_directories_are_no_crash(world: World) -> None:
    """Thousands of nested directories are nothing btrsendd wrote: verify and rebuild go on
    as if they were not there (they once overflowed the stack: an internal error)."""
    for args in (["verify"], ["catalog", "rebuild", "--force"]):
        proc = run_briefly(world, *args)
        assert proc.returncode == 0, proc.stderr.decode()
    assert len(world.list()) == 2


@pytest.fixture(params=["local", "seaweedfs"])
def fresh(
    request: pytest.FixtureRequest, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> World:
    """A world with data spanning several 1 MiB volumes, nothing backed up yet, on the local
    backend or a bucket."""
    w = make_world(
        make_btrfs("src"), tmp_path, gpg_key, storage_section(request.param, request, tmp_path)
    )
    populate(w.source, big=3 * 1024**2)
    return w


def stored(world: World, name: str) -> list[str]:
    """The keys of the objects called ``name`` in the source's backups."""
    return sorted(o.key for o in world_storage(world).list("") if o.key.endswith(f"/{name}"))


def test_a_volume_deleted_during_the_upload_is_no_complete_backup(fresh: World) -> None:
    """Someone else deletes a stored volume while the upload goes on (another machine's
    verify --clean on the same prefix, a lifecycle rule): the manifest must not follow."""
    snap = fresh.root / "manual"
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", fresh.source, snap],
        check=True,
        capture_output=True,
    )
    stream = subprocess.run(["btrfs", "send", snap], capture_output=True, check=True).stdout
    proc = subprocess.Popen(
        [BTRSENDD, "--config", str(fresh.write_config()), "--log-format", "json",
         "backup-stdin", "--source", "data", "--date", DAYS[0].isoformat()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == b"c\n"
        proc.stdin.write(stream[: 2 * 1024**2 + 1000])
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not stored(fresh, "vol-00001.btrfs.zst.gpg"):
            assert time.monotonic() < deadline, "the second volume was never stored"
            time.sleep(0.05)
        world_storage(fresh).delete(stored(fresh, "vol-00000.btrfs.zst.gpg"))
        _, err = proc.communicate(stream[2 * 1024**2 + 1000 :], timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err.decode()
    [line] = [x for x in err.decode().splitlines() if x.startswith("btrsendd: ")]
    assert "volume 0" in line and "missing" in line, line
    assert [b for b in fresh.list() if b["state"] == "complete"] == []
    assert stored(fresh, "manifest.json") == []


def test_a_stored_volume_lost_before_a_resume_starts_the_backup_afresh(fresh: World) -> None:
    """An interrupted upload whose stored volume vanished meanwhile: resuming it would skip
    that volume and complete a backup that cannot be restored."""
    faulty_zstd(fresh, nth=3, action="exec sleep 600")  # stalls after two volumes
    proc = start(fresh, "backup", "--date", DAYS[0].isoformat(), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not stored(fresh, "vol-00001.btrfs.zst.gpg"):
            assert time.monotonic() < deadline, "the second volume was never stored"
            time.sleep(0.05)
    finally:
        kill_all(proc)  # kill -9 mid-upload: the backup stays 'uploading'
    del fresh.env["PATH"]
    [uploading] = fresh.list()
    assert uploading["state"] == "uploading"
    world_storage(fresh).delete(stored(fresh, "vol-00000.btrfs.zst.gpg"))

    done = fresh.run("backup", "--date", DAYS[0].isoformat())
    assert events(done, "backup.discarded")
    [backup] = fresh.list()
    assert backup["state"] == "complete" and backup["id"] != uploading["id"]
    assert fresh.run("verify").stdout.decode().endswith("verify: OK\n")

"""Interruptions are clean: SIGINT or SIGTERM of a foreground command, and kill -9.

A stopped command prints one line saying what was interrupted and what the next run does,
exits 128 + the signal, and leaves no process and no temporary file behind; what kill -9
leaves, ``verify`` reports and the next backup cleans up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from btrsendd.config import load_config
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support.backups import OnBackend, error_lines
from tests.support.faults import faulty_zstd, kill_all, start
from tests.support.trees import assert_same_tree, populate
from tests.support.world import World, local_world

DAY = date(2000, 1, 1)


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source, big=5 * 1024**2)  # about 8 volumes of 1 MiB
    return w


def temporary_files(world: World) -> list[Path]:
    return list((world.work / "archive").rglob(".tmp-*"))


def hung_at_volume(world: World, index: int, *args: str) -> subprocess.Popen[bytes]:
    """Start ``args`` with zstd hanging (as one process: ``exec``) when volume ``index``
    starts, in a process group of its own; returns once it hangs there."""
    counter = faulty_zstd(world, nth=index + 1, action="exec sleep 600")
    proc = start(world, *args, stderr=open(world.work / "run.log", "wb"))
    deadline = time.monotonic() + 60
    while not (counter.exists() and counter.read_text().strip() == str(index + 1)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)  # let it block on the hung stage
    return proc


def stopped(world: World, proc: subprocess.Popen[bytes], signum: int) -> str:
    """Signal the command alone (not its children) and check how it ended: 128 + signum,
    one error line, no process of its group left.  Returns the error line."""
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 128 + signum
    with pytest.raises(ProcessLookupError):  # every child was stopped and reaped
        os.killpg(proc.pid, 0)
    world.env.pop("PATH")
    log = (world.work / "run.log").read_text()
    assert "Traceback" not in log and "internal error" not in log, log
    [line] = [line for line in log.splitlines() if line.startswith("btrsendd: error:")]
    assert f"interrupted by {signal.Signals(signum).name}" in line
    return line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopped_backup_says_so_cleans_up_and_resumes(
    world: World, make_btrfs: MakeBtrfs, signum: int
) -> None:
    proc = hung_at_volume(world, 3, "backup", "--date", DAY.isoformat())
    line = stopped(world, proc, signum)
    assert "3 volume(s) stored" in line and "next backup resumes" in line
    assert temporary_files(world) == []
    [partial] = world.list()
    assert (partial["state"], partial["volumes"]) == ("uploading", 3)
    # `status` keeps a trace: when, by which signal, and that the next backup resumes it.
    name = signal.Signals(signum).name
    [data] = json.loads(world.run("status", "--json").stdout)["sources"]
    [interrupted] = data["interrupted"]
    assert (interrupted["id"], interrupted["signal"]) == (partial["id"], name)
    last = data["interruptions"]["last"]
    assert (last["backup_id"], last["volumes_stored"], last["outcome"]) == (
        partial["id"],
        3,
        "resume",
    )
    assert data["interruptions"]["by_signal"] == 1
    text = world.run("status").stdout.decode()
    assert f": stopped by {name}" in text and f"{partial['id']} has 3 volume(s) stored" in text

    world.run("backup", "--date", DAY.isoformat())
    assert [b["state"] for b in world.list()] == ["complete"]
    assert "interrupted" not in world.run("status").stdout.decode()
    target = make_btrfs("dst")
    world.restore(DAY, target)
    assert_same_tree(world.snapshots / DAY.isoformat(), target / DAY.isoformat())


def test_stopped_restore_leaves_nothing_in_the_target(world: World, make_btrfs: MakeBtrfs) -> None:
    world.run("backup", "--date", DAY.isoformat())
    target = make_btrfs("dst")
    proc = hung_at_volume(world, 2, *world.restore_args(DAY, target))
    line = stopped(world, proc, signal.SIGTERM)
    assert f"nothing was left in {target}" in line
    assert list(target.iterdir()) == []
    world.restore(DAY, target)
    assert_same_tree(world.snapshots / DAY.isoformat(), target / DAY.isoformat())


def test_stopped_outside_the_upload_leaves_a_trace_too(world: World) -> None:
    proc = hung_at_volume(world, 2, "backup", "--date", DAY.isoformat())
    stopped(world, proc, signal.SIGTERM)
    [partial] = world.list()
    # The next backup first replays `btrfs send` to check the two stored volumes (no upload
    # yet); a btrfs whose send hangs stops it there.
    fake = world.work / "fakebin"
    fake.mkdir(exist_ok=True)
    started = world.work / "sends"
    script = fake / "btrfs"
    script.write_text(f'#!/bin/sh\necho send >> "{started}"\nexec sleep 600\n')
    script.chmod(0o755)
    world.env["PATH"] = f"{fake}:{os.environ['PATH']}"
    proc = start(
        world, "backup", "--date", DAY.isoformat(), stderr=open(world.work / "run.log", "wb")
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    stopped(world, proc, signal.SIGINT)

    [data] = json.loads(world.run("status", "--json").stdout)["sources"]
    assert data["interruptions"]["by_signal"] == 2
    last = data["interruptions"]["last"]
    assert (last["signal"], last["reason"]) == ("SIGINT", "stopped by SIGINT (Ctrl-C)")
    assert (last["backup_id"], last["state"]) == (None, None)
    # The partial backup is still there for the next backup to resume.
    assert [(i["id"], i["volumes_stored"]) for i in data["interrupted"]] == [(partial["id"], 2)]
    text = world.run("status").stdout.decode()
    assert ": stopped by SIGINT (Ctrl-C); no upload was under way" in text, text
    assert f"  interrupted   {partial['id']}: 2 volume(s) stored; the next cycle resumes it" in text


def test_an_upload_that_fails_part_way_is_recorded_with_its_error(world: World) -> None:
    faulty_zstd(world, nth=3, action="exit 3")  # volumes 0 and 1 are stored
    assert world.run("backup", "--date", DAY.isoformat(), check=False).returncode == 1
    world.env.pop("PATH")
    [data] = json.loads(world.run("status", "--json").stdout)["sources"]
    last = data["interruptions"]["last"]
    assert (last["signal"], last["reason"]) == (None, "compressor (zstd) failed: exit status 3")
    assert (last["volumes_stored"], last["outcome"], last["state"]) == (2, "resume", "uploading")
    assert data["interruptions"]["by_error"] == 1
    text = world.run("status").stdout.decode()
    assert ": compressor (zstd) failed: exit status 3; " in text


def test_read_only_command_interrupted(world: World) -> None:
    world.run("backup", "--date", DAY.isoformat())
    proc = hung_at_volume(world, 0, "verify", "--deep", "--gnupg-home", str(world.key.secret_home))
    line = stopped(world, proc, signal.SIGINT)
    assert "verify interrupted by SIGINT" in line


def test_what_kill_9_leaves_is_reported_and_cleaned(world: World, make_btrfs: MakeBtrfs) -> None:
    proc = hung_at_volume(world, 2, "backup", "--date", DAY.isoformat())
    kill_all(proc)
    world.env.pop("PATH")
    [leftover] = temporary_files(world)  # volume 2's write, cut short

    report = world.run("verify", check=False)
    assert report.returncode == 1
    key = leftover.relative_to(world.work / "archive").as_posix()
    assert f"data: ORPHAN: {key} (unfinished upload)" in report.stdout.decode()
    # The next backup resumes the interrupted one and removes what it left.
    world.run("backup", "--date", DAY.isoformat())
    assert temporary_files(world) == []
    assert world.run("verify").stdout.decode().endswith("verify: OK\n")


def test_verify_clean_removes_temporary_files(world: World) -> None:
    world.run("backup", "--date", DAY.isoformat())
    [backup] = world.list()
    leftover = (
        world.work / "archive" / "data" / backup["id"] / ".tmp-vol-00009.btrfs.zst.gpg-0badc0de"
    )
    leftover.write_bytes(b"x" * 1000)
    assert world.run("verify", check=False).returncode == 1
    cleaned = world.run("verify", "--clean")
    assert "removed 1 unfinished upload(s)" in cleaned.stdout.decode()
    assert not leftover.exists()
    assert error_lines(world.run("verify")) == []


def test_stopped_multipart_upload_is_aborted_on_s3(
    on_backend: OnBackend, request: pytest.FixtureRequest
) -> None:
    # SeaweedFS, volumes of several 5 MiB parts: stopped while the second part of volume 0
    # fills, the backup aborts its multipart upload (an open one is billed until aborted).
    w = on_backend("seaweedfs")
    w.pipeline = 'compression = "zstd"\nvolume_size = "16MiB"\npart_size = "5MiB"'
    populate(w.source, big=20 * 1024**2)
    # zstd passes 7 MiB on, then hangs as one process (the pipeline ends before the exec).
    counter = faulty_zstd(w, nth=1, action=f'"$real" "$@" | head -c {7 * 1024**2}; exec sleep 600')
    proc = start(w, "backup", "--date", DAY.isoformat(), stderr=open(w.work / "run.log", "wb"))
    server: S3Server = request.getfixturevalue("seaweedfs_server")
    bucket = load_config(w.config).storage.bucket
    client = server.client()
    deadline = time.monotonic() + 60
    while not client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert time.monotonic() < deadline and proc.poll() is None, counter.read_text()
        time.sleep(0.1)
    time.sleep(1)  # the first part is on its way
    line = stopped(w, proc, signal.SIGTERM)
    assert "nothing was stored; it was discarded" in line
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    w.run("backup", "--date", DAY.isoformat())
    assert [b["state"] for b in w.list()] == ["complete"]

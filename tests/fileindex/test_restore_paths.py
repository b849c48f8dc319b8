"""``restore --path`` end to end: real btrfs snapshots, gpg, moto with Glacier semantics.

A chain whose days create, modify, rename, hardlink, reflink, punch holes in, set xattrs on,
delete and re-create files is backed up in volumes of 1 MiB to DEEP_ARCHIVE on moto, through
a proxy that counts every request.  Random files and directories of a day are restored onto
ext4 (a loop image) and tmpfs and must equal those paths in that day's snapshot; only the
volumes holding them may be thawed and read; and ``--path /`` onto ext4 must equal the whole
snapshot.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from btrsendd.restore import POLL_SECONDS_ENV
from tests.fixtures.btrfs import MakeBtrfs, mounted_tmpfs
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support.backups import error_lines
from tests.support.filechain import DAYS as CHANGES
from tests.support.filechain import Day
from tests.support.restored import differences, loop_ext4, restored_paths
from tests.support.world import World, local_world, make_world

#: One backup day (the schedule's ``backup_days``) per day of the chain builder.
DAYS = [date(2000, m, d) for m in (1, 2, 3) for d in (1, 7, 14, 21)][: len(CHANGES)]
PADDING = 2_500_000


@pytest.fixture
def counting(moto_server: S3Server) -> Iterator[FaultProxy]:
    """A proxy in front of moto that records every request (and never fails one)."""
    with FaultProxy.running(moto_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def world(
    counting: FaultProxy,
    moto_server: S3Server,
    make_btrfs: MakeBtrfs,
    gpg_key: GpgKey,
    tmp_path: Path,
) -> World:
    work = tmp_path / "work"
    work.mkdir()
    storage = (
        f'backend = "s3"\nbucket = "{moto_server.new_bucket()}"\nprefix = "host1"\n'
        f'endpoint_url = "{counting.endpoint_url}"\nstorage_class = "DEEP_ARCHIVE"'
    )
    w = make_world(make_btrfs("src", size="2G"), work, gpg_key, storage)
    w.schedule = "max_incrementals = 10"
    w.env[POLL_SECONDS_ENV] = "0.05"
    return w


def padded(number: int, change: Day) -> Day:
    """``change``, then a file of incompressible bytes written that day and never again, so
    that each backup spans several volumes and one file lies in one day's volumes."""

    def day(root: Path) -> None:
        change(root)
        (root / f"padding-{number}.bin").write_bytes(random.Random(number).randbytes(PADDING))

    return day


def back_up_chain(world: World) -> None:
    """The chain builder's days, each backed up (the first full, the others incremental)."""
    for number, (day, change) in enumerate(zip(DAYS, CHANGES, strict=True)):
        padded(number, change)(world.source)
        world.run("backup", "--date", day.isoformat())


def reads(proxy: FaultProxy, since: int) -> tuple[set[str], set[str]]:
    """The volume keys read (GetObject) and thawed (RestoreObject) since exchange ``since``."""
    exchanges = proxy.exchanges[since:]
    got = {e.key for e in exchanges if e.operation == "GetObject" and "/vol-" in e.key}
    thawed = {e.key for e in exchanges if e.operation == "RestoreObject"}
    return got, thawed


def chosen_paths(snapshot: Path, rng: random.Random, count: int) -> list[str]:
    """``count`` random files and directories of a snapshot (never the root)."""
    every = sorted(restored_paths(snapshot))
    return sorted(rng.sample(every, min(count, len(every))))


def only_these(restored: Path, paths: list[str]) -> None:
    """The restore holds the paths, what is below them and their ancestors: nothing else."""
    for rel in restored_paths(restored):
        assert any(rel == p or rel.startswith(p + "/") or p.startswith(rel + "/") for p in paths), (
            f"{rel!r} restored, but not asked for"
        )


def planned(output: str) -> tuple[int, int]:
    """The volumes the plan says it reads, of how many in the chain."""
    selected = re.search(r"^  (\d+) object\(s\), .* stored: ", output, re.MULTILINE)
    chain = re.search(r"whole-chain restore would read (\d+) object", output)
    assert selected and chain, output
    return int(selected[1]), int(chain[1])


def test_random_paths_restore_onto_ext4_and_tmpfs_reading_only_their_volumes(
    world: World, counting: FaultProxy, tmp_path: Path
) -> None:
    back_up_chain(world)
    rng = random.Random(16)
    for day in DAYS[1:]:
        snapshot = world.snapshots / day.isoformat()
        paths = chosen_paths(snapshot, rng, 5)
        for where in ("ext4", "tmpfs"):
            mount = (
                loop_ext4(tmp_path, f"ext4-{day}")
                if where == "ext4"
                else mounted_tmpfs(tmp_path / f"tmpfs-{day}", "512m")
            )
            with mount as target:
                since = len(counting.exchanges)
                output = world.run(
                    *world.restore_args(day, target),
                    "--tier",
                    "Bulk",
                    *(a for p in paths for a in ("--path", p)),
                ).stdout.decode()
                restored = target / day.isoformat()
                problems = differences(snapshot, restored, paths)
                assert not problems, f"{where}, {paths}:\n" + "\n".join(problems)
                only_these(restored, paths)
                got, thawed = reads(counting, since)
                selected, chain = planned(output)
                # Only the volumes the index names are read, and thawed first unless an
                # earlier restore of this test thawed them already.
                assert len(got) == selected < chain, output
                assert thawed <= got


def test_a_file_written_on_one_day_comes_from_that_days_volumes(
    world: World, counting: FaultProxy, tmp_path: Path
) -> None:
    back_up_chain(world)
    day, path = DAYS[-1], "padding-1.bin"  # written on the second day only
    snapshot = world.snapshots / day.isoformat()
    since = len(counting.exchanges)
    with loop_ext4(tmp_path) as target:
        output = world.run(
            *world.restore_args(day, target), "--tier", "Bulk", "--path", path
        ).stdout.decode()
        assert differences(snapshot, target / day.isoformat(), [path]) == []
    print(output)  # the README's example
    got, thawed = reads(counting, since)
    # Thawed and read: the volumes of that day's backup that hold its 2.5 MB, no others.
    assert got == thawed
    assert all(f"/{DAYS[1].isoformat()}-inc-" in key for key in got), got
    assert len(got) <= PADDING // 2**20 + 2, output
    selected, chain = planned(output)
    assert selected == len(got) and chain >= 4 * 3, output


def test_the_whole_tree_restores_onto_ext4(world: World, tmp_path: Path) -> None:
    back_up_chain(world)
    day = DAYS[-1]
    with loop_ext4(tmp_path) as target:
        output = world.run(
            *world.restore_args(day, target), "--tier", "Bulk", "--path", "/"
        ).stdout.decode()
        snapshot = world.snapshots / day.isoformat()
        # ext4 cannot hold btrfs's inode flags (chattr +C, +c: btrfs send v1 does not even
        # carry them) or a creation time it did not make; nothing compared here differs.
        problems = differences(snapshot, target / day.isoformat(), [""])
        assert not problems, "\n".join(problems)
    selected, chain = planned(output)
    assert selected <= chain


def test_the_target_is_refused_before_anything_is_spent(world: World, tmp_path: Path) -> None:
    back_up_chain(world)
    day = DAYS[-1]
    target = tmp_path / "target"
    (target / day.isoformat()).mkdir(parents=True)
    for paths, problem in [
        (["/"], f"already contains {day}"),
        (["../etc"], "must name a path inside the backed-up subvolume"),
    ]:
        proc = world.run(
            *world.restore_args(day, target),
            *(a for p in paths for a in ("--path", p)),
            check=False,
        )
        assert proc.returncode == 2, proc.stderr.decode()
        [line] = error_lines(proc)
        assert problem in line, line
    other = tmp_path / "other"
    other.mkdir()
    proc = world.run(*world.restore_args(day, other), "--path", "no/such/file", check=False)
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert f"no/such/file did not exist in data on {day}" in line, line
    assert list(other.iterdir()) == []


def test_a_chain_without_index_is_refused_with_the_way_out(world: World, tmp_path: Path) -> None:
    back_up_chain(world)
    # As if the full backup had been made by a btrsendd that kept no index.
    with sqlite3.connect(world.work / "state" / "catalog.db") as db:
        db.execute(
            "UPDATE backups SET index_name = NULL, index_stored_size = NULL, "
            "index_stored_sha256 = NULL, index_raw_size = NULL, index_version = NULL "
            "WHERE kind = 'full'"
        )
    target = tmp_path / "target"
    target.mkdir()
    proc = world.run(*world.restore_args(DAYS[-1], target), "--path", "docs", check=False)
    assert proc.returncode == 2, proc.stderr.decode()
    [line] = error_lines(proc)
    assert "has no file index" in line and "restore the whole day instead" in line, line
    assert list(target.iterdir()) == []


def test_a_damaged_volume_leaves_nothing_in_the_target(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    w = local_world(make_btrfs("src", size="2G"), work, gpg_key)
    w.schedule = "max_incrementals = 10"
    back_up_chain(w)
    # Same size, other bytes: only decoding finds it, halfway through the restore.
    [damaged] = (work / "archive").glob(f"data/{DAYS[1]}-inc-*/vol-00001.*")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    proc = w.run(*w.restore_args(DAYS[-1], target), "--path", "/", check=False)
    assert proc.returncode == 1, proc.stderr.decode()
    [line] = error_lines(proc)
    assert "volume 1" in line and f"nothing was left in {target}" in line, line
    assert list(target.iterdir()) == []


def test_the_final_rename_never_replaces_what_appeared_meanwhile(tmp_path: Path) -> None:
    from btrsendd.errors import OperationalError
    from btrsendd.fileindex.restore_paths import rename_new

    (tmp_path / ".work").mkdir()
    (tmp_path / "2000-01-21").mkdir()  # empty: a plain rename(2) would replace it
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OperationalError, match="appeared during the restore"):
            rename_new(fd, ".work", "2000-01-21", tmp_path)
        rename_new(fd, ".work", "2000-01-22", tmp_path)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2000-01-21", "2000-01-22"]


@pytest.mark.parametrize(
    ("typed", "path"),
    [("docs/", "docs"), ("/docs//a.txt", "docs/a.txt"), ("./docs", "docs"), ("docs/./a", "docs/a"),
     (".", ""), ("/", "")],
)  # fmt: skip
def test_a_path_is_read_as_people_type_it(typed: str, path: str) -> None:
    from btrsendd.fileindex.restore_paths import wanted_path

    assert wanted_path(typed) == path


@pytest.mark.parametrize("typed", ["..", "docs/../../etc", "../etc"])
def test_a_path_leaving_the_subvolume_is_a_usage_error(typed: str) -> None:
    from btrsendd.errors import UsageError
    from btrsendd.fileindex.restore_paths import wanted_path

    with pytest.raises(UsageError, match="must name a path inside the backed-up subvolume"):
        wanted_path(typed)


def test_a_failed_restore_removes_a_tree_of_any_depth_and_nothing_outside(tmp_path: Path) -> None:
    """What a failed restore leaves is removed through descriptors, without recursion (a
    day's tree can be 2,048 levels deep) and without following a symlink."""
    from btrsendd.fileindex.restore_paths import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    target = tmp_path / "target"
    work = target / ".btrsendd-paths-0"
    deep = work / "/".join(["d"] * 1500)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        subprocess.run(["mkdir", "-p", "--", str(deep)], check=True)  # pathlib's recurses
        for where in (work, work / "d", deep):
            (where / "0").mkdir()  # names the removal may want for what it moves
            (where / "f").write_text("x")
            (where / "link").symlink_to(outside)
            os.mkfifo(where / "fifo")
        (work / "d" / "d" / "dirlink").symlink_to(outside, target_is_directory=True)
        os.close(fd)
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        remove_tree(fd, work.name)
        remove_tree(fd, "never-there")
        assert list(target.iterdir()) == []
        assert [p.name for p in outside.iterdir()] == ["keep"]
    finally:
        os.close(fd)
        # Whatever is left is too deep for pytest's own clean-up (shutil.rmtree recurses).
        subprocess.run(["rm", "-rf", "--", str(target)], check=True)

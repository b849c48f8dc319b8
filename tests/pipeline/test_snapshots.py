"""Snapshots on real btrfs filesystems (loop devices), and the pure retention rule."""

from __future__ import annotations

import errno
import os
import subprocess
from datetime import date
from pathlib import Path

import btrfsutil
import pytest

from btrsendd.errors import OperationalError, UsageError
from btrsendd.snapshots import (
    Snapshot,
    delete_snapshot,
    find_snapshot,
    list_snapshots,
    prune,
    retention,
    snapshot_by_uuid,
    take_snapshot,
)
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume

DAY = date(2000, 1, 1)


@pytest.fixture
def snapdir(btrfs_fs: Path) -> Path:
    return btrfs_fs / "snaps"


def test_take_snapshot_is_read_only_copy_in_private_dir(source: Path, snapdir: Path) -> None:
    snap = take_snapshot(source, snapdir, DAY)

    assert snap.path == snapdir / "2000-01-01"
    assert (snap.name, snap.date, snap.seq) == ("2000-01-01", DAY, 0)
    assert snap.uuid == btrfsutil.subvolume_info(snap.path).uuid.hex()
    assert btrfsutil.get_subvolume_read_only(snap.path)
    assert (snap.path / "file.txt").read_text() == "hello\n"
    assert snapdir.stat().st_mode & 0o777 == 0o700
    with pytest.raises(OSError) as raised:
        (snap.path / "new").write_text("x")
    assert raised.value.errno == errno.EROFS


def test_take_snapshot_twice_a_day_reuses_it(source: Path, snapdir: Path) -> None:
    first = take_snapshot(source, snapdir, DAY)
    (source / "file.txt").write_text("changed\n")

    assert take_snapshot(source, snapdir, DAY) == first
    assert os.listdir(snapdir) == ["2000-01-01"]


def test_fresh_snapshots_get_the_next_suffix(source: Path, snapdir: Path) -> None:
    base = take_snapshot(source, snapdir, DAY)
    one = take_snapshot(source, snapdir, DAY, fresh=True)
    two = take_snapshot(source, snapdir, DAY, fresh=True)

    assert [s.name for s in (base, one, two)] == ["2000-01-01", "2000-01-01.1", "2000-01-01.2"]
    assert [s.seq for s in (base, one, two)] == [0, 1, 2]
    assert len({base.uuid, one.uuid, two.uuid}) == 3
    assert find_snapshot(snapdir, DAY) == two
    # Without fresh, the day's newest snapshot is the one reused.
    assert take_snapshot(source, snapdir, DAY) == two


def test_fresh_suffix_follows_the_highest_not_the_first_gap(source: Path, snapdir: Path) -> None:
    take_snapshot(source, snapdir, DAY)
    one = take_snapshot(source, snapdir, DAY, fresh=True)
    take_snapshot(source, snapdir, DAY, fresh=True)
    delete_snapshot(one)

    assert take_snapshot(source, snapdir, DAY, fresh=True).name == "2000-01-01.3"


def test_fresh_on_a_new_day_takes_the_plain_name(source: Path, snapdir: Path) -> None:
    assert take_snapshot(source, snapdir, DAY, fresh=True).name == "2000-01-01"


def test_plain_directory_is_not_a_source(btrfs_fs: Path, snapdir: Path) -> None:
    plain = btrfs_fs / "plain"
    plain.mkdir()

    with pytest.raises(UsageError) as raised:
        take_snapshot(plain, snapdir, DAY)
    message = str(raised.value)
    assert message == (
        f"{plain} is not a btrfs subvolume; create it with `btrfs subvolume create` or point "
        "sources.path at one"
    )
    assert not snapdir.exists()


def test_missing_source_is_a_usage_error(btrfs_fs: Path, snapdir: Path) -> None:
    with pytest.raises(UsageError, match="does not exist; create it with `btrfs subvolume"):
        take_snapshot(btrfs_fs / "nope", snapdir, DAY)


def test_source_outside_btrfs_is_not_a_subvolume(tmp_path: Path, snapdir: Path) -> None:
    with pytest.raises(UsageError, match="is not a btrfs subvolume"):
        take_snapshot(tmp_path, snapdir, DAY)


def test_snapshot_dir_on_another_filesystem(source: Path, make_btrfs: MakeBtrfs) -> None:
    other = make_btrfs("other")

    with pytest.raises(UsageError, match="is not on the same btrfs filesystem as"):
        take_snapshot(source, other / "snaps", DAY)


def test_snapshot_dir_parent_must_exist(source: Path, btrfs_fs: Path) -> None:
    with pytest.raises(UsageError, match=r"parent of .* does not exist"):
        take_snapshot(source, btrfs_fs / "missing" / "snaps", DAY)


def test_read_only_filesystem_is_an_operational_error(
    source: Path, snapdir: Path, btrfs_fs: Path
) -> None:
    snapdir.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(btrfs_fs)], check=True)
    try:
        with pytest.raises(OperationalError, match="mounted read-only"):
            take_snapshot(source, snapdir, DAY)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(btrfs_fs)], check=True)


def test_list_snapshots_sorted_and_ignoring_strangers(source: Path, snapdir: Path) -> None:
    later = take_snapshot(source, snapdir, date(2000, 2, 1))
    earlier = take_snapshot(source, snapdir, DAY)
    earlier_1 = take_snapshot(source, snapdir, DAY, fresh=True)
    (snapdir / "2000-03-01").mkdir()  # plain directory
    make_subvolume(snapdir / "2000-04-01")  # writable subvolume
    (snapdir / "2000-05-01").write_text("a file")
    (snapdir / "2000-06-01").symlink_to(later.path)  # never follow: prune would delete it
    btrfsutil.create_snapshot(source, snapdir / "2000-13-01", read_only=True)  # not a date
    btrfsutil.create_snapshot(source, snapdir / "2000-07-01.0", read_only=True)  # not a seq
    btrfsutil.create_snapshot(source, snapdir / "manual", read_only=True)

    assert list_snapshots(snapdir) == [earlier, earlier_1, later]


def test_list_missing_dir_is_empty(btrfs_fs: Path) -> None:
    assert list_snapshots(btrfs_fs / "nothing-here") == []


def test_snapshot_dir_that_is_a_file(source: Path, btrfs_fs: Path) -> None:
    (btrfs_fs / "afile").write_text("x")

    with pytest.raises(UsageError, match="not a directory"):
        list_snapshots(btrfs_fs / "afile")
    with pytest.raises(UsageError, match="not a directory"):
        take_snapshot(source, btrfs_fs / "afile", DAY)


def test_find_and_by_uuid(source: Path, snapdir: Path) -> None:
    first = take_snapshot(source, snapdir, DAY)
    second = take_snapshot(source, snapdir, date(2000, 1, 7))

    assert find_snapshot(snapdir, date(2000, 1, 7)) == second
    assert find_snapshot(snapdir, date(2000, 1, 2)) is None
    assert snapshot_by_uuid(snapdir, first.uuid.upper()) == first
    assert snapshot_by_uuid(snapdir, "0" * 32) is None


def test_delete_snapshot_is_idempotent(source: Path, snapdir: Path) -> None:
    snap = take_snapshot(source, snapdir, DAY)

    delete_snapshot(snap)
    assert not snap.path.exists()
    delete_snapshot(snap)


def test_delete_refuses_a_different_subvolume_at_that_path(source: Path, snapdir: Path) -> None:
    old = take_snapshot(source, snapdir, DAY)
    delete_snapshot(old)
    new = take_snapshot(source, snapdir, DAY)

    with pytest.raises(OperationalError, match="refusing to delete"):
        delete_snapshot(old)
    assert list_snapshots(snapdir) == [new]


# -- retention: pure -------------------------------------------------------------------------


def snap(day: str, seq: int = 0) -> Snapshot:
    d = date.fromisoformat(day)
    name = day if seq == 0 else f"{day}.{seq}"
    return Snapshot(path=Path("/snaps") / name, date=d, seq=seq, uuid=f"{name}-uuid")


TODAY = date(2000, 3, 1)


def test_retention_deletes_only_older_than_keep_days() -> None:
    snaps = [snap("2000-02-18"), snap("2000-02-19"), snap("2000-02-20"), snap("2000-03-01")]

    # 2000-02-20 is exactly 10 days old: kept; 02-19 is 11 days old: deleted.
    assert retention(snaps, TODAY, 10, set()) == [snap("2000-02-18"), snap("2000-02-19")]


def test_retention_spares_keep_set() -> None:
    snaps = [snap("2000-01-01"), snap("2000-01-07"), snap("2000-03-01")]

    assert retention(snaps, TODAY, 10, {Path("/snaps/2000-01-07")}) == [snap("2000-01-01")]


def test_retention_never_deletes_the_newest() -> None:
    snaps = [snap("2000-01-07"), snap("2000-01-01"), snap("2000-01-07", 1)]

    assert retention(snaps, TODAY, 0, set()) == [snap("2000-01-01"), snap("2000-01-07")]


def test_retention_edge_cases() -> None:
    assert retention([], TODAY, 0, set()) == []
    assert retention([snap("1990-01-01")], TODAY, 0, set()) == []
    assert retention([snap("2000-03-01"), snap("2000-03-01", 1)], TODAY, 0, set()) == []


def test_prune_on_real_filesystem(source: Path, snapdir: Path) -> None:
    days = [date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14), date(2000, 2, 21)]
    taken = [take_snapshot(source, snapdir, d) for d in days]
    keep = {snapdir / "2000-01-07"}

    deleted = prune(snapdir, date(2000, 3, 1), 30, keep)

    assert deleted == [taken[0], taken[2]]
    assert list_snapshots(snapdir) == [taken[1], taken[3]]
    assert prune(snapdir, date(2000, 3, 1), 30, keep) == []

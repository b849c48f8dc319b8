"""File indexes whose records are well formed but say what no file system holds, as an
intruder who writes to the archive (and knows the public key) could store them: ``find``
and ``restore --path`` answer with one error line, before anything is thawed or written."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from btrsendd.fileindex import records as r
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.backups import back_up, error_lines
from tests.support.indexes import plant, stored_index
from tests.support.world import World, local_world

DAY = date(2000, 1, 1)

#: Each hostile record (on a file "evil" the forged index makes) and what the error says.
HOSTILE: list[tuple[r.Record, str]] = [
    (r.Truncate("evil", 2**63), "a size of 9223372036854775808 bytes"),
    (r.Write("evil", 2**64 - 1, 1, 0), "a size of"),
    (r.Chown("evil", 2**40, 0), "the owner 1099511627776:0"),
    (r.SetXattr("evil", b"user.a\0b", b"v"), "an xattr named b'user.a\\x00b'"),
    (r.SetXattr("evil", b"", b"v"), "an xattr named b''"),
    (r.Chmod("evil", 2**64 - 1), "is not a file mode"),
    (r.Mknod("node", 2**64 - 1, 0), "is not a file mode"),
]


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    work = tmp_path / "work"
    work.mkdir()
    return local_world(make_btrfs("src"), work, gpg_key)


def test_records_no_file_system_holds_are_one_error_line_before_anything_is_spent(
    world: World, tmp_path: Path
) -> None:
    [backup] = back_up(world, [DAY])
    genuine = stored_index(world, backup["id"])
    for number, (record, problem) in enumerate(HOSTILE):
        records = (*genuine.records, r.Mkfile("evil"), record)
        plant(world, backup["id"], replace(genuine, records=records))
        target = tmp_path / f"target-{number}"
        target.mkdir()
        proc = world.run(*world.restore_args(DAY, target), "--path", "evil", check=False)
        assert proc.returncode == 1, (record, proc.stderr.decode())
        [line] = error_lines(proc)
        assert problem in line and "internal error" not in line, (record, line)
        assert b"Restore " not in proc.stdout, proc.stdout  # refused before the plan
        assert list(target.iterdir()) == []
        # find reads the same index: the day it cannot replay is unseen, not a crash.
        home = str(world.key.secret_home)
        found = world.run("find", "--source", "data", "--gnupg-home", home, "evil", check=False)
        assert found.returncode == 0, (record, found.stderr.decode())


def test_the_index_of_another_stream_is_refused(world: World, tmp_path: Path) -> None:
    """A manifest adopted by ``catalog rebuild`` may pair this backup's volumes with some
    other backup's index (its SHA-256 and size): its pieces would name offsets in these
    volumes, which hold other bytes that every volume check passes."""
    [backup] = back_up(world, [DAY])
    genuine = stored_index(world, backup["id"])
    for other in (
        replace(genuine, header=replace(genuine.header, uuid="ab" * 16)),
        replace(genuine, stream_size=genuine.stream_size + 1),
    ):
        plant(world, backup["id"], other)
        target = tmp_path / "target"
        target.mkdir(exist_ok=True)
        proc = world.run(*world.restore_args(DAY, target), "--path", "/", check=False)
        assert proc.returncode == 1, proc.stderr.decode()
        [line] = error_lines(proc)
        assert "describes another send stream" in line, line
        assert list(target.iterdir()) == []
    plant(world, backup["id"], genuine)
    world.run(*world.restore_args(DAY, target), "--path", "/")

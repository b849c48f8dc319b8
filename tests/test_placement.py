"""Where paths sit among subvolumes: nested subvolumes are reported, an archive or a snapshot
directory inside a source is refused, and the usual layout (``/home/.btrsendd``) works."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import btrfsutil
import pytest

from btrsendd.pipeline import btrfs
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.support.backups import events
from tests.support.world import World, local_world

FIRST = "2000-01-01"
SNAPDIR_KEY = "sources[0].snapshot_dir (name = 'data')"


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src", size="300M"), tmp_path, gpg_key)
    (w.source / "file.txt").write_text("data\n")
    return w


def findings(world: World) -> tuple[int, list[str]]:
    """check-config's exit status and its findings, as ``level: key: message``."""
    proc = world.run("check-config", "--json", check=False)
    text = proc.stderr.decode()
    assert "Traceback" not in text and "internal error" not in text, text
    report = json.loads(proc.stdout)
    return proc.returncode, [
        f"{f['level']}: {f['key']}: {f['message']}" for f in report["findings"]
    ]


def with_snapshot_dir(world: World, snapshot_dir: Path) -> None:
    world.config.write_text(
        world.config.read_text().replace(
            f'snapshot_dir = "{world.snapshots}"', f'snapshot_dir = "{snapshot_dir}"'
        )
    )


def with_archive(world: World, archive: Path) -> None:
    world.storage = f'backend = "local"\npath = "{archive}"'
    world.write_config()


# -- nested subvolumes -----------------------------------------------------------------------


def test_nested_subvolumes_are_reported_by_check_config_and_logged_by_every_backup(
    world: World, make_btrfs: MakeBtrfs, tmp_path: Path
) -> None:
    nested = make_subvolume(world.source / "vm-images")
    (world.source / "deep").mkdir()
    deeper = make_subvolume(world.source / "deep" / "cache")
    (nested / "disk.img").write_text("not in the backup\n")
    world.write_config()

    status, lines = findings(world)

    assert status == 0  # a warning: the user may mean it
    assert lines == [
        f"warning: sources[0].path (name = 'data'): 2 subvolume(s) nested in {world.source} "
        "are in none of its backups (a btrfs send stream stops at subvolume boundaries): "
        f"{nested}, {deeper}; give each one worth keeping a [[sources]] entry of its own, or "
        "make it a plain directory"
    ]

    for day in (FIRST, "2000-01-07"):
        proc = world.run("backup", "--date", day)
        [event] = events(proc, "backup.nested_subvolumes")
        assert event["level"] == "warning"
        assert sorted(event["paths"]) == sorted([str(nested), str(deeper)])

    # What the warning is about: the restored day does not hold them at all.
    target = make_btrfs("restore")
    world.restore(date(2000, 1, 7), target)
    restored = target / "2000-01-07"
    assert (restored / "file.txt").read_text() == "data\n"
    assert not (restored / "vm-images").exists()
    assert not (restored / "deep" / "cache").exists()


def test_btrsendds_own_subvolumes_and_other_sources_are_not_reported(world: World) -> None:
    """The snapshot directory inside the source (a subvolume, with snapshots in it), an
    archive that is a subvolume of its own, and a source nested in this one."""
    snapdir = world.source / ".btrsendd"
    archive = make_subvolume(world.source / "archive")
    archive.chmod(0o700)
    inner = make_subvolume(world.source / "inner")
    world.storage = f'backend = "local"\npath = "{archive}"'
    world.write_config()
    text = world.config.read_text().replace(
        f'snapshot_dir = "{world.snapshots}"', f'snapshot_dir = "{snapdir}"'
    )
    text += (
        f'\n[[sources]]\nname = "inner"\npath = "{inner}"\n'
        f'snapshot_dir = "{world.root / "inner-snapshots"}"\n'
    )
    world.config.write_text(text)

    proc = world.run("backup", "--date", FIRST)
    assert events(proc, "backup.nested_subvolumes") == []
    world.run("backup", "--date", "2000-01-07")  # snapshots now sit under the source

    status, lines = findings(world)
    assert (status, lines) == (0, []), lines


# -- the local archive and snapshot directories inside a source ----------------------------


def test_an_archive_inside_the_source_is_refused(world: World) -> None:
    archive = world.source / "archive"
    with_archive(world, archive)

    status, lines = findings(world)

    assert status == 2
    assert lines == [
        f"error: storage.path: {archive} is in the subvolume of source 'data' ({world.source}): "
        "every backup of it would hold the archive, which grows by a backup each time; put the "
        f"archive outside {world.source} (another filesystem is best), or in a subvolume of its "
        "own (btrfs subvolume create DIR)"
    ]


def test_an_archive_in_a_subvolume_of_its_own_inside_the_source_is_accepted(
    world: World,
) -> None:
    archive = make_subvolume(world.source / "archive")
    with_archive(world, archive)

    status, lines = findings(world)

    assert (status, lines) == (0, []), lines
    world.run("backup", "--date", FIRST)
    # The archive is in no backup: the snapshot shows an empty directory in its place.
    assert list((world.snapshots / FIRST / "archive").iterdir()) == []


def test_a_plain_snapshot_dir_inside_the_source_is_refused(world: World) -> None:
    snapdir = world.source / "snaps"
    snapdir.mkdir(mode=0o700)
    world.write_config()
    with_snapshot_dir(world, snapdir)

    status, lines = findings(world)

    assert status == 2
    assert lines == [
        f"error: {SNAPDIR_KEY}: {snapdir} is a plain directory in the subvolume of source "
        f"'data' ({world.source}), so it is part of its backups; make it a subvolume of its "
        f"own: mv {snapdir} {snapdir}.old && btrfs subvolume create {snapdir} && chmod 700 "
        f"{snapdir} (the next backup is then a full one; once it is stored, delete the "
        f"snapshots in {snapdir}.old with btrfs subvolume delete)"
    ]


def test_the_usual_layout_makes_the_snapshot_dir_a_private_subvolume(
    world: World, make_btrfs: MakeBtrfs
) -> None:
    snapdir = world.source / ".btrsendd"
    world.write_config()
    with_snapshot_dir(world, snapdir)
    assert findings(world) == (0, [])

    world.run("backup", "--date", FIRST)
    (world.source / "file.txt").write_text("changed\n")
    world.run("backup", "--date", "2000-01-07")

    assert btrfs.is_subvolume(snapdir)
    assert snapdir.stat().st_mode & 0o777 == 0o700
    assert btrfsutil.subvolume_id(snapdir) != btrfsutil.subvolume_id(world.source)
    assert findings(world) == (0, [])
    # The second snapshot does not hold the first (a snapshot directory of its own), and
    # the backup is the source's files alone.
    assert list((snapdir / "2000-01-07" / ".btrsendd").iterdir()) == []
    target = make_btrfs("restore")
    world.restore(date(2000, 1, 7), target)
    restored = target / "2000-01-07"
    assert sorted(p.name for p in restored.iterdir()) == ["file.txt"]
    assert (restored / "file.txt").read_text() == "changed\n"


def test_a_snapshot_dir_inside_another_sources_subvolume_is_refused(world: World) -> None:
    other = make_subvolume(world.root / "other")
    snapdir = world.source / ".other-snapshots"  # inside source 'data', for source 'other'
    world.write_config()
    world.config.write_text(
        world.config.read_text()
        + f'\n[[sources]]\nname = "other"\npath = "{other}"\nsnapshot_dir = "{snapdir}"\n'
    )

    status, lines = findings(world)

    assert status == 2
    assert lines == [
        f"error: sources[1].snapshot_dir (name = 'other'): {snapdir} would be made a plain "
        f"directory in the subvolume of source 'data' ({world.source}), and so be part of its "
        f"backups; create it as a subvolume first: btrfs subvolume create {snapdir} && chmod "
        f"700 {snapdir}"
    ]
    subprocess.run(["btrfs", "subvolume", "create", str(snapdir)], check=True, capture_output=True)
    snapdir.chmod(0o700)
    assert findings(world) == (0, [])

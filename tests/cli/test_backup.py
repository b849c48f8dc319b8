"""``btrsendd backup``: what it stores, expires and refuses, and how a failure reads."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import date
from pathlib import Path

from tests.cli.helpers import archive_files, one_error_line
from tests.fixtures.gpg import GpgKey
from tests.support.world import World


def test_source_that_is_not_a_subvolume(world: World) -> None:
    world.write_config()
    (world.root / "data").rename(world.root / "data-moved")
    (world.root / "data").mkdir()
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    assert proc.returncode != 0
    assert "not a btrfs subvolume" in proc.stderr.decode()
    assert world.list() == []


def test_unknown_recipient_fails_the_backup_and_stores_nothing(
    world: World, other_gpg_key: GpgKey
) -> None:
    # The keyring lacks the recipient: gpg fails; its message reaches the user.
    world.encryption = (
        f'mode = "gpg"\nrecipients = ["{world.key.fingerprint}"]\n'
        f'gnupg_home = "{other_gpg_key.public_home}"'
    )
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert "gpg failed" in line
    assert world.list() == []
    assert archive_files(world) == []


def test_failing_compressor_names_itself(world: World, tmp_path: Path) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    script = fake / "zstd"
    script.write_text("#!/bin/sh\ncat >/dev/null\necho 'zstd: simulated failure' >&2\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    world.env["PATH"] = f"{fake}:{os.environ['PATH']}"
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert "zstd" in line and "simulated failure" in line
    assert world.list() == [] and archive_files(world) == []


def test_expiry_deletes_remote_objects_then_rows(world: World) -> None:
    world.schedule = "max_incrementals = 1\nchain_lifetime_days = 10"
    for day in ("2000-01-01", "2000-01-07", "2000-01-14", "2000-01-21"):
        (world.source / f"{day}.txt").write_text(day)
        world.run("backup", "--date", day)
    backups = world.list()
    assert [b["date"] for b in backups] == ["2000-01-14", "2000-01-21"]
    assert all(f.split("/")[1].startswith("2000-01-") for f in archive_files(world))
    kept = {b["id"] for b in backups}
    assert {f.split("/")[1] for f in archive_files(world)} == kept


def test_missing_parent_snapshot_gives_a_full_backup(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    subprocess.run(
        ["btrfs", "subvolume", "delete", str(world.snapshots / "2000-01-01")],
        check=True,
        capture_output=True,
    )
    proc = world.run("backup", "--date", "2000-01-07")
    assert b"backup.parent_missing" in proc.stderr
    assert [b["kind"] for b in world.list()] == ["full", "full"]


def test_dry_run_changes_nothing(world: World) -> None:
    proc = world.run("backup", "--date", "2000-01-01", "--dry-run")
    assert b"full backup" in proc.stdout
    assert world.list() == []
    assert not world.snapshots.exists() or not any(world.snapshots.iterdir())


def test_force_backs_up_off_schedule_once(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    world.run("backup", "--date", "2000-01-03", "--force")
    world.run("backup", "--date", "2000-01-03", "--force")
    assert [b["date"] for b in world.list()] == ["2000-01-01", "2000-01-03"]
    assert date(2000, 1, 3).isoformat() in {p.name for p in world.snapshots.iterdir()}

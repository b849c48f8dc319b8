"""The command line as users and scripts meet it: messages, exit statuses, protocols, logs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import date
from pathlib import Path

import pytest

from tests import sendstreams as ss
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.world import BTRSENDD, World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    return local_world(make_btrfs("src"), tmp_path, gpg_key)


def archive_files(world: World) -> list[str]:
    root = world.work / "archive"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def one_error_line(stderr: bytes) -> str:
    """The error a user sees: exactly one 'btrsendd: error:' line, no traceback."""
    text = stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("btrsendd: error:")]
    assert len(errors) == 1, text
    return errors[0]


def test_check_config_ok(world: World) -> None:
    proc = world.run("check-config")
    assert b"OK" in proc.stdout


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda t: t + "\nbogus = 1\n", "bogus: unknown key"),
        (lambda t: t.replace("[schedule]", '[schedule]\ncron = "61 * * * *"'), "schedule.cron"),
        (lambda t: t.replace('compression = "zstd"', 'compression = "lz4"'), "compression"),
        (lambda t: t.replace('volume_size = "1MiB"', 'volume_size = "lots"'), "volume_size"),
        (lambda t: t.replace("[[sources]]", "[[sources]]\nextra = 1"), "sources[0]"),
        (lambda t: t.replace("[storage]\n", '[storage]\nbucket = "b"\n', 1), None),
    ],
)
def test_bad_config_is_one_clear_error_and_exit_2(
    world: World, mutation: object, expected: str | None
) -> None:
    text = world.write_config().read_text()
    world.config.write_text(mutation(text))  # type: ignore[operator]
    proc = world.run("check-config", check=False)
    if expected is None:  # a harmless extra key of the right kind is fine
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2
    assert expected in proc.stderr.decode()
    assert str(world.config) in proc.stderr.decode()


def test_machine_problems_are_reported_with_key_and_fix(world: World, tmp_path: Path) -> None:
    world.write_config()
    text = world.config.read_text()
    plain = tmp_path / "plain-dir"
    plain.mkdir()
    world.config.write_text(text.replace(f'path = "{world.source}"', f'path = "{plain}"'))
    world.config.chmod(0o644)
    proc = world.run("check-config", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "not a btrfs subvolume" in err and "sources[0].path" in err
    assert "chmod 600" in err


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = subprocess.run(
        [BTRSENDD, "list"], capture_output=True, env={**os.environ, "BTRSENDD_CONFIG": str(missing)}
    )
    assert proc.returncode == 2
    assert f"{missing}: no such file" in one_error_line(proc.stderr)


def test_usage_errors_exit_2(world: World) -> None:
    assert world.run("plan", "--date", "2000-13-01", check=False).returncode == 2
    proc = world.run("list", "--source", "nope", check=False)
    assert proc.returncode == 2
    assert "no source named 'nope'" in one_error_line(proc.stderr)


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


def test_backup_stdin_speaks_the_seed_protocol(world: World) -> None:
    def stdin_backup(day: str, payload: bytes) -> bytes:
        return world.run("backup-stdin", "--source", "data", "--date", day, input=payload).stdout

    full = ss.small_stream()  # a SUBVOL stream of subvolume ss.UUID, ctransid 7
    incremental = ss.header() + ss.snapshot(parent_uuid=ss.UUID, parent_ctransid=7) + ss.end()
    assert stdin_backup("2000-01-01", full) == b"c\n"
    assert stdin_backup("2000-01-01", b"") == b""
    assert stdin_backup("2000-01-02", b"") == b""
    assert stdin_backup("2000-01-07", incremental) == b"i 2000-01-01\n"
    backups = world.list()
    assert [(b["date"], b["kind"], b["parent"]) for b in backups] == [
        ("2000-01-01", "full", None),
        ("2000-01-07", "incremental", "2000-01-01"),
    ]
    assert backups[0]["raw_bytes"] == len(full)


def test_list_json_contract(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    [b] = world.list()
    for key in ("id", "source", "date", "kind", "parent", "chain", "raw_bytes", "stored_bytes",
                "volumes", "state"):  # fmt: skip
        assert key in b
    assert (b["source"], b["date"], b["kind"], b["parent"], b["state"]) == (
        "data", "2000-01-01", "full", None, "complete",
    )  # fmt: skip
    assert b["chain"] == b["id"] and b["volumes"] >= 1


def test_logs_are_json_events_with_fields(world: World) -> None:
    proc = world.run("backup", "--date", "2000-01-01")
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    by_name = {e["event"]: e for e in events}
    assert {"snapshot.created", "backup.planned", "backup.completed"} <= set(by_name)
    done = by_name["backup.completed"]
    assert done["source"] == "data" and done["bytes"] > 0 and "duration" in done


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


def test_output_to_a_reader_that_left_is_quiet(world: World) -> None:
    # `btrsendd list | head -1`: the reader is gone before btrsendd writes.  Exit as tools a
    # closed pipe stops do (128 + SIGPIPE), with no "internal error" and no traceback.
    world.run("backup", "--date", "2000-01-01")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        proc = subprocess.run(
            [BTRSENDD, "--config", str(world.config), "list", "--json"],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            env={**os.environ, **world.env},
        )
    finally:
        os.close(write_fd)
    assert proc.returncode == 141
    assert proc.stderr == b""

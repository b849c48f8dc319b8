"""``btrsendd run`` as a real subprocess on a real btrfs: schedule, catch-up, signals, locks,
``status`` and ``trigger``.

The daemon logs JSON lines to a file, and the tests wait for its events (``cycle.started``,
``backup.completed``, ...) rather than for fixed times, so they are quick on a fast machine
and still pass on a slow one.  Cycles seconds apart come from ``BTRSENDD_TEST_CRON_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from btrsendd.cron import cron_trigger, weekday_names
from tests.daemons import Daemon
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.world import World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    work = tmp_path / "work"
    work.mkdir()
    return local_world(make_btrfs("src"), work, gpg_key)


@pytest.fixture
def start(world: World) -> Iterator[Callable[..., Daemon]]:
    """``start(env=None)`` starts a daemon; every daemon is killed at teardown."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None) -> Daemon:
        started.append(Daemon(world, env))
        return started[-1]

    yield make
    for daemon in started:
        daemon.kill()


def state_file(world: World) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((world.work / "state" / "daemon.json").read_text())
    return data


def wait_state(world: World, check: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The daemon's published state, once ``check`` holds for it."""
    deadline = time.monotonic() + 30
    while not check(state := state_file(world)):
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return state


def write_random(path: Path, size: int) -> None:
    """Incompressible data: what makes a slow compressor slow."""
    with open(path, "wb") as out:
        out.write(os.urandom(size))


# -- the schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("0-2", "sun,mon,tue"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("mon-wed/2", "mon,wed"),
        ("5/1", "sun,fri,sat"),
    ],
)
def test_crontab_weekdays_become_apscheduler_names(field: str, names: str) -> None:
    # crontab: 0 and 7 are Sunday; APScheduler 3: 0 is Monday and 7 is an error.
    assert weekday_names(field) == names


def test_cron_follows_crontab_semantics() -> None:
    after = datetime(2026, 11, 26, 12, 0).astimezone()  # a Thursday

    def fire(expr: str) -> datetime:
        when: datetime = cron_trigger(expr).get_next_fire_time(None, after)
        return when

    assert fire("0 0 * * *").replace(tzinfo=None) == datetime(2026, 11, 27, 0, 0)
    assert fire("30 2 * * 0").replace(tzinfo=None) == datetime(2026, 11, 29, 2, 30)  # Sunday
    assert fire("0 0 * * 7").replace(tzinfo=None) == datetime(2026, 11, 29, 0, 0)
    # Both day fields restricted: either one matching is enough (crontab(5)), so the 1st of
    # December does not wait for a Monday, and Monday the 30th comes first.
    assert fire("0 0 1 * 1").replace(tzinfo=None) == datetime(2026, 11, 30, 0, 0)
    assert fire("0 0 1 * 6").replace(tzinfo=None) == datetime(2026, 11, 28, 0, 0)
    assert fire("0 0 1 12 *").replace(tzinfo=None) == datetime(2026, 12, 1, 0, 0)


def test_scheduled_cycles_run_and_a_failing_source_does_not_stop_the_daemon(
    world: World, start: Callable[..., Daemon]
) -> None:
    (world.source / "file").write_text("data")
    daemon = start({"BTRSENDD_TEST_CRON_SECONDS": "1"})
    assert daemon.events("daemon.test_schedule")

    first = daemon.wait_for("cycle.finished", trigger="schedule")
    assert first["results"] == {"data": "backed up"}
    second = daemon.wait_for("cycle.finished", count=2, trigger="schedule")
    assert second["results"] == {"data": "no backup due"}
    assert [b["state"] for b in world.list()] == ["complete"]

    # The source vanishes: the cycle logs why, the daemon keeps serving.
    subprocess.run(["btrfs", "subvolume", "delete", str(world.source)], check=True)
    failed = daemon.wait_for("backup.failed", source="data")
    assert "does not exist" in failed["reason"]
    daemon.wait_for("cycle.finished", results={"data": "failed"})
    daemon.wait_for("cycle.finished", count=2, results={"data": "failed"})
    assert daemon.proc.poll() is None
    state = wait_state(world, lambda s: s["sources"]["data"]["last_result"] == "failed")
    assert "does not exist" in state["sources"]["data"]["last_error"]
    assert daemon.stop() == 0


def test_a_cycle_missed_while_stopped_runs_once_at_start(
    world: World, start: Callable[..., Daemon]
) -> None:
    (world.source / "file").write_text("data")
    daemon = start()
    # A first start has missed nothing: no cycle until midnight.
    time.sleep(0.5)
    assert not daemon.events("cycle.started")
    assert daemon.stop() == 0

    # As if the daemon had last run a scheduled cycle two days ago: midnight has passed since.
    path = world.work / "state" / "daemon.json"
    state = json.loads(path.read_text())
    state["last_scheduled"] = (datetime.now().astimezone() - timedelta(days=2)).isoformat()
    path.write_text(json.dumps(state))

    daemon = start()
    assert daemon.wait_for("cycle.catch_up")
    finished = daemon.wait_for("cycle.finished", trigger="schedule")
    assert finished["results"] == {"data": "backed up"}
    assert daemon.stop() == 0
    assert len(daemon.events("cycle.started")) == 1

    # That cycle counts: the next start has nothing to catch up.
    daemon = start()
    time.sleep(0.5)
    assert not daemon.events("cycle.catch_up")
    assert not daemon.events("cycle.started")
    assert daemon.stop() == 0


# -- signals -------------------------------------------------------------------------------


def test_a_storm_of_sigusr1_makes_exactly_one_backup(
    world: World, start: Callable[..., Daemon]
) -> None:
    # A cycle of a second or so (zstd -19 on incompressible data), so the storm falls before
    # and during it, and none after.
    write_random(world.source / "big", 2 * 1024**2)
    world.pipeline = 'compression = "zstd"\nlevel = 19\nvolume_size = "1MiB"'
    daemon = start()
    # `btrsendd backup` by hand works while the daemon idles: the cycle lock is free.
    yesterday = date.today() - timedelta(days=1)
    world.run("backup", "--date", yesterday.isoformat())
    write_random(world.source / "big", 2 * 1024**2)

    for _ in range(5):
        daemon.signal(signal.SIGUSR1)
        time.sleep(0.02)
    finished = daemon.wait_for("cycle.finished", trigger="signal")
    assert finished["results"] == {"data": "backed up"}
    time.sleep(1.0)  # room for a (wrong) second cycle to start
    assert len(daemon.events("cycle.started")) == 1

    backups = world.list()
    assert [(b["date"], b["kind"]) for b in backups] == [
        (yesterday.isoformat(), "full"),
        (date.today().isoformat(), "incremental"),
    ]
    assert daemon.stop() == 0


def test_sigusr1_during_a_scheduled_cycle_makes_one_forced_cycle_after_it(
    world: World, start: Callable[..., Daemon]
) -> None:
    write_random(world.source / "big", 6 * 1024**2)
    world.pipeline = 'compression = "zstd"\nlevel = 19\nvolume_size = "1MiB"'
    daemon = start()
    assert daemon.stop() == 0
    path = world.work / "state" / "daemon.json"
    state = json.loads(path.read_text())
    state["last_scheduled"] = (datetime.now().astimezone() - timedelta(days=1)).isoformat()
    path.write_text(json.dumps(state))

    daemon = start()
    daemon.wait_for("backup.started")  # the catch-up cycle is uploading, slowly
    for _ in range(5):
        daemon.signal(signal.SIGUSR1)
        time.sleep(0.05)
    daemon.wait_for("cycle.finished", trigger="signal", timeout=120)
    time.sleep(1.0)
    started = [e["trigger"] for e in daemon.events("cycle.started")]
    assert started == ["schedule", "signal"]
    assert daemon.stop() == 0


def test_sighup_reloads_and_a_broken_config_keeps_the_old_one(
    world: World, start: Callable[..., Daemon]
) -> None:
    (world.source / "file").write_text("data")
    daemon = start()
    good = world.config.read_text()

    world.config.write_text(good.replace("[schedule]", '[schedule]\ncron = "61 * * * *"'))
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_for("config.reload_failed")
    assert "schedule.cron" in failed["error"]
    assert daemon.proc.poll() is None

    # Still serving with the old configuration.
    daemon.signal(signal.SIGUSR1)
    assert daemon.wait_for("cycle.finished")["results"] == {"data": "backed up"}

    world.config.write_text(good.replace("[schedule]", '[schedule]\ncron = "5 4 * * *"'))
    daemon.signal(signal.SIGHUP)
    assert daemon.wait_for("config.reloaded")["cron"] == "5 4 * * *"
    assert datetime.fromisoformat(state_file(world)["next_run"]).strftime("%H:%M") == "04:05"
    assert daemon.stop() == 0


def test_sigterm_mid_upload_stops_cleanly_and_the_next_cycle_finishes_the_backup(
    world: World, start: Callable[..., Daemon]
) -> None:
    # zstd -19 on incompressible data runs at a few MB/s: an upload of several seconds.
    write_random(world.source / "big", 20 * 1024**2)
    world.pipeline = 'compression = "zstd"\nlevel = 19\nvolume_size = "1MiB"'
    daemon = start()
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for("backup.started")
    wait_state(world, lambda s: (s.get("cycle") or {}).get("bytes"))

    stopping = time.monotonic()
    assert daemon.stop() == 0
    took = time.monotonic() - stopping
    assert took < 10, f"stopping took {took:.1f} s"
    assert daemon.events("cycle.aborted"), daemon.log_text
    [failed] = daemon.events("upload.failed")
    assert "the daemon is stopping" in failed["error"]
    assert state_file(world)["state"] == "stopped"

    # Consistent: nothing complete without its manifest; the partial backup is either gone
    # or left `uploading` for the next cycle.
    archive = world.work / "archive" / "data"
    backups = world.list()
    assert all(b["state"] == "uploading" for b in backups), backups
    for b in backups:
        assert not (archive / b["id"] / "manifest.json").exists()

    daemon = start()
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for("cycle.finished", timeout=120)
    if backups:  # resumed after the volumes stored before the stop
        assert daemon.events("backup.completed")[0]["resumed_bytes"] > 0
    backups = world.list()
    assert [b["state"] for b in backups] == ["complete"]
    assert (archive / backups[0]["id"] / "manifest.json").exists()
    assert daemon.stop() == 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (what `systemctl kill` reaches in the unit's cgroup)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split() if children.exists() else []
        for kid in map(int, kids):
            found += [kid, *descendants(kid)]
    return found


def test_usr1_to_every_process_of_the_unit_does_not_hurt_a_running_upload(
    world: World, start: Callable[..., Daemon]
) -> None:
    write_random(world.source / "big", 6 * 1024**2)
    world.pipeline = 'compression = "zstd"\nlevel = 19\nvolume_size = "1MiB"'
    daemon = start()
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for("backup.started")
    wait_state(world, lambda s: (s.get("cycle") or {}).get("bytes"))
    # As `systemctl kill -s USR1 btrsendd` does: the daemon and all its children.
    for pid in [daemon.proc.pid, *descendants(daemon.proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
    daemon.wait_for("backup.completed", timeout=120)
    assert not daemon.events("backup.failed"), daemon.log_text
    daemon.wait_for("cycle.finished", timeout=120)
    assert [b["state"] for b in world.list()] == ["complete"]
    assert daemon.stop() == 0


def test_metrics_textfile_after_each_cycle(world: World, start: Callable[..., Daemon]) -> None:
    textfile = world.work / "btrsendd.prom"
    world.metrics = f'textfile = "{textfile}"'
    (world.source / "file").write_text("data" * 1000)
    daemon = start()
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for("cycle.finished")
    assert daemon.stop() == 0
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in textfile.read_text().splitlines()
        if not line.startswith("#")
    }
    [backup] = world.list()
    assert metrics['btrsendd_last_backup_bytes{source="data"}'] == backup["raw_bytes"]
    assert metrics['btrsendd_uploaded_bytes_total{source="data"}'] == backup["raw_bytes"]
    assert metrics['btrsendd_failures_total{source="data"}'] == 0
    assert time.time() - metrics['btrsendd_last_success_timestamp_seconds{source="data"}'] < 120
    stored = metrics['btrsendd_stored_bytes{source="data",storage_class="local"}']
    assert stored == backup["stored_bytes"]
    assert 'btrsendd_last_backup_duration_seconds{source="data"}' in metrics


# -- single instance, status, trigger -----------------------------------------------------


def test_a_second_daemon_exits_2_and_status_and_trigger_find_the_first(
    world: World, start: Callable[..., Daemon]
) -> None:
    (world.source / "file").write_text("data")
    daemon = start()
    second = world.run("run", check=False)
    assert second.returncode == 2
    message = second.stderr.decode().strip().splitlines()
    assert len(message) == 1
    assert f"already running on {world.work / 'state'}" in message[0]
    assert f"pid {daemon.proc.pid}" in message[0]

    report = json.loads(world.run("status", "--json").stdout)
    assert report["daemon"]["running"] is True
    assert report["daemon"]["pid"] == daemon.proc.pid
    assert report["daemon"]["status"].startswith("idle, next run ")

    out = world.run("trigger").stdout.decode()
    assert f"(pid {daemon.proc.pid}) is running" in out
    assert daemon.wait_for("cycle.finished")["results"] == {"data": "backed up"}

    report = json.loads(world.run("status", "--json").stdout)
    [source] = report["sources"]
    assert source["last_backup"]["kind"] == "full"
    assert source["chain"]["length"] == 1
    assert source["chain"]["limit"] == 3  # World: max_incrementals = 2
    assert source["local_snapshots"] == 1
    assert source["last_run"]["result"] == "backed up"
    assert report["storage"]["classes"][0]["storage_class"] == "local"
    assert daemon.stop() == 0

    text = world.run("status").stdout.decode()
    assert "not running" in text
    assert "last backup" in text and "full" in text
    stopped = world.run("trigger", check=False)
    assert stopped.returncode == 1
    assert "no daemon is running" in stopped.stderr.decode()

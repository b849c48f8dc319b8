"""``btrsendd run`` as a real subprocess on a real btrfs: the main loop's schedule, catch-up,
reload, and the single instance that ``status`` and ``trigger`` find.

Cycles seconds apart come from ``BTRSENDD_TEST_CRON_SECONDS``; the tests wait for the
daemon's events (``tests/daemons.py``), not for fixed times.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from tests.daemon.helpers import wait_state
from tests.support.daemons import Daemon
from tests.support.world import World

# -- the schedule ----------------------------------------------------------------------------


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


# -- signals the main loop handles itself ---------------------------------------------------


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
    # daemon.json is written just after the event: wait for it rather than race it.
    wait_state(world, lambda s: datetime.fromisoformat(s["next_run"]).strftime("%H:%M") == "04:05")
    assert daemon.stop() == 0


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

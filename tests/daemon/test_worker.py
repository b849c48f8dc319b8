"""``btrsendd run``'s cycle worker, through the real daemon: requests coalesce, a stop abandons
the upload cleanly, children survive the unit's signals, metrics follow each cycle.

The tests wait for the daemon's events (``tests/daemons.py``), not for fixed times.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta

from tests.daemon.helpers import descendants, state_file, wait_state, write_random
from tests.support.daemons import Daemon
from tests.support.world import World


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


def test_sigterm_mid_upload_stops_cleanly_and_the_next_cycle_finishes_the_backup(
    world: World, start: Callable[..., Daemon]
) -> None:
    # zstd -19 on incompressible data runs at a few MB/s: an upload of several seconds.
    write_random(world.source / "big", 20 * 1024**2)
    world.pipeline = 'compression = "zstd"\nlevel = 19\nvolume_size = "1MiB"'
    textfile = world.work / "btrsendd.prom"
    world.metrics = f'textfile = "{textfile}"'
    daemon = start()
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for("backup.started")
    uploading = wait_state(world, lambda s: (s.get("cycle") or {}).get("bytes"))["cycle"]
    # A first full backup's total is estimated from the source's filesystem, and says so.
    assert uploading["estimate"] == "the space used on the source's filesystem"
    assert uploading["total"] > 0

    stopping = time.monotonic()
    assert daemon.stop() == 0
    took = time.monotonic() - stopping
    assert took < 10, f"stopping took {took:.1f} s"
    assert daemon.events("cycle.aborted"), daemon.log_text
    # A stop systemd asked for is routine: a warning, and no error anywhere.
    [stopped] = daemon.events("upload.interrupted")
    assert stopped["level"] == "warning"
    assert stopped["reason"] == "the daemon was stopped by SIGTERM"
    assert [e for e in daemon.events() if e.get("level") == "error"] == []
    assert state_file(world)["state"] == "stopped"

    # Consistent: nothing complete without its manifest; the partial backup is either gone
    # or left `uploading` for the next cycle.
    archive = world.work / "archive" / "data"
    backups = world.list()
    assert all(b["state"] == "uploading" for b in backups), backups
    for b in backups:
        assert not (archive / b["id"] / "manifest.json").exists()

    # `status` says when, why and what became of it; the metrics count it.
    [data] = json.loads(world.run("status", "--json").stdout)["sources"]
    last = data["interruptions"]["last"]
    assert (data["interruptions"]["by_signal"], last["signal"]) == (1, "SIGTERM")
    assert last["reason"] == "the daemon was stopped by SIGTERM"
    assert last["outcome"] == ("resume" if backups else "discarded")
    assert last["volumes_stored"] == sum(b["volumes"] for b in backups)
    assert last["state"] == ("uploading" if backups else "gone")
    assert data["last_run"]["result"] == "interrupted: the daemon was stopped by SIGTERM"
    assert data["last_error"] is None
    text = world.run("status").stdout.decode()
    assert re.search(r"  interrupted   \S+ \S+: the daemon was stopped by SIGTERM; ", text), text
    assert "  last error    none" in text
    metrics = textfile.read_text()
    assert 'btrsendd_interrupted_total{source="data",cause="signal"} 1' in metrics
    assert 'btrsendd_interrupted_total{source="data",cause="error"} 0' in metrics
    assert 'btrsendd_last_interrupted_timestamp_seconds{source="data"}' in metrics

    daemon = start()
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for("cycle.finished", timeout=120)
    if backups:  # resumed after the volumes stored before the stop
        assert daemon.events("backup.completed")[0]["resumed_bytes"] > 0
    backups = world.list()
    assert [b["state"] for b in backups] == ["complete"]
    assert (archive / backups[0]["id"] / "manifest.json").exists()
    assert daemon.stop() == 0
    # Once a backup completed after it, the interruption is history: kept, no longer shown.
    [data] = json.loads(world.run("status", "--json").stdout)["sources"]
    assert data["interruptions"]["last"]["resolved"] is True
    assert "interrupted" not in world.run("status").stdout.decode()


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

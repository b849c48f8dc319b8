"""``status.build_report`` on a catalog made by the real command line: what is backed up,
what comes next, what an interrupted backup left, and what the daemon last published."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from btrsendd.config import load_config
from btrsendd.daemon.state import STATE_FILE
from btrsendd.status import build_report
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.faults import faulty_zstd
from tests.support.trees import populate
from tests.support.world import World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    w = local_world(make_btrfs("src"), tmp_path, gpg_key)
    populate(w.source, big=3 * 1024**2)  # several volumes of 1 MiB
    return w


def local(text: str | None) -> datetime | None:
    """A time from the report as the wall-clock time it is here."""
    return None if text is None else datetime.fromisoformat(text).astimezone().replace(tzinfo=None)


def test_backups_chain_and_next_backup_from_the_catalog(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    (world.source / "new.txt").write_text("day 7")
    world.run("backup", "--date", "2000-01-07")
    full, inc = world.list()

    report = build_report(load_config(world.config), datetime(2000, 1, 8, 12).astimezone())
    daemon = report["daemon"]
    assert (daemon["running"], daemon["last_seen"]) == (False, None)
    assert local(daemon["next_run"]) == datetime(2000, 1, 9)  # cron "0 0 * * *"
    [data] = report["sources"]
    assert data["name"] == "data" and data["path"] == str(world.source)
    assert data["last_backup"] == {
        "id": inc["id"],
        "date": "2000-01-07",
        "kind": "incremental",
        "raw_bytes": inc["raw_bytes"],
        "stored_bytes": inc["stored_bytes"],
        "completed_at": inc["completed_at"],
    }
    # backup_days 1, 7, 14, 21: the 9th to the 13th have nothing due.
    assert local(data["next_backup"]["at"]) == datetime(2000, 1, 14)
    assert data["next_backup"]["action"] == "incremental"
    assert data["chain"] == {
        "id": full["id"],
        "length": 2,
        "limit": 3,  # World: max_incrementals = 2
        "first_date": "2000-01-01",
        "age_days": 7,
    }
    assert (data["local_snapshots"], data["local_snapshots_error"]) == (2, None)
    assert (data["uploading"], data["interrupted"], data["problem"]) == (None, [], None)
    assert data["interruptions"] == {"by_signal": 0, "by_error": 0, "last": None}
    assert (data["locked_until"], data["deferred_deletion"], data["stray_versions"]) == (
        None,
        None,
        None,
    )
    assert data["last_run"] == {"at": None, "result": None}
    assert data["last_error"] is None
    stored = full["stored_bytes"] + inc["stored_bytes"]
    assert report["storage"] == {
        "description": f"local directory {world.work / 'archive'}",
        "classes": [{"storage_class": "local", "stored_bytes": stored, "monthly_usd": 0.0}],
        "stored_bytes": stored,
        "noncurrent_bytes": 0,
        "monthly_usd": 0.0,
        "object_lock": "off",
    }

    # Seen from before the newest backup's date: no backup until then, and how to undo it.
    early = build_report(load_config(world.config), datetime(2000, 1, 5, 12).astimezone())
    problem = early["sources"][0]["problem"]
    assert "the newest backup (2000-01-07) is dated after today (2000-01-05)" in problem
    assert "`btrsendd forget --source data --date 2000-01-07`" in problem


def test_an_interrupted_backup_and_what_a_stopped_daemon_last_saw(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    (world.source / "big.dat").write_bytes(bytes(reversed((world.source / "big.dat").read_bytes())))
    faulty_zstd(world, nth=3, action="exit 3")  # the third volume fails: two are stored
    assert world.run("backup", "--date", "2000-01-07", check=False).returncode == 1
    world.env.pop("PATH")
    [_, partial] = world.list()
    assert partial["state"] == "uploading"
    # What a daemon that has since stopped published (its pid now no daemon's).
    (world.work / "state" / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": 1,
                "state": "idle",
                "cycle": {"trigger": "signal", "date": "2000-01-07", "started_at": "x"},
                "sources": {
                    "data": {
                        "last_run_at": "2000-01-07T00:00:00+00:00",
                        "last_result": "failed",
                        "last_error": "zstd failed",
                        "last_error_at": "2000-01-07T00:00:01+00:00",
                    }
                },
                "updated_at": "2000-01-07T00:00:02+00:00",
            }
        )
    )
    report = build_report(load_config(world.config), datetime(2000, 1, 8, 12).astimezone())
    assert report["daemon"]["running"] is False
    assert report["daemon"]["last_seen"] == "2000-01-07T00:00:02+00:00"
    [data] = report["sources"]
    assert data["uploading"] is None  # the cycle it recorded is not running
    # When and why, as the upload recorded it: an error, not a signal.
    [interrupted] = data["interrupted"]
    reason = "compressor (zstd) failed: exit status 3"
    assert interrupted == {
        "id": partial["id"],
        "volumes_stored": 2,
        "at": interrupted["at"],
        "signal": None,
        "reason": reason,
    }
    assert partial["volumes"] == 2
    ago = datetime.now().astimezone() - datetime.fromisoformat(interrupted["at"])
    assert abs(ago.total_seconds()) < 120
    assert data["interruptions"] == {
        "by_signal": 0,
        "by_error": 1,
        "last": {
            "at": interrupted["at"],
            "signal": None,
            "reason": reason,
            "backup_id": partial["id"],
            "date": "2000-01-07",
            "volumes_stored": 2,
            "outcome": "resume",
            "state": "uploading",
            "resolved": False,
        },
    }
    assert data["last_run"] == {"at": "2000-01-07T00:00:00+00:00", "result": "failed"}
    assert data["last_error"] == {"at": "2000-01-07T00:00:01+00:00", "message": "zstd failed"}

"""End to end on real btrfs, real gpg and real storage servers, through the real CLI.

Several days of changing data are backed up with ``btrsendd backup --date D`` (full,
incrementals, a second chain), then restored, chain member by chain member, into a second
btrfs filesystem, and every restored day must equal its snapshot file by file.
"""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.trees import ODD_NAME, assert_same_tree, is_sparse, mutate, populate
from tests.support.world import World, make_world, storage_section

DAYS = [date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14), date(2000, 1, 21), date(2000, 2, 1)]


@pytest.fixture(params=["local", "moto", "seaweedfs"])
def world(
    request: pytest.FixtureRequest, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> World:
    work = tmp_path / "work"
    work.mkdir()
    w = make_world(make_btrfs("src"), work, gpg_key, storage_section(request.param, request, work))
    if request.param != "local":
        # Volumes of several parts each, so multipart uploads and volume joins both happen.
        w.pipeline = 'compression = "zstd"\nvolume_size = "12MiB"\npart_size = "5MiB"'
    return w


def test_days_of_changes_restore_exactly(world: World, make_btrfs: MakeBtrfs) -> None:
    populate(world.source, big=0 if "local" in world.storage else 26 * 1024**2)
    for n, day in enumerate(DAYS):
        if n:
            mutate(world.source, n)
        world.run("backup", "--date", day.isoformat())

    backups = world.list()
    summary = [(b["date"], b["kind"], b["parent"], b["state"]) for b in backups]
    assert summary == [
        ("2000-01-01", "full", None, "complete"),
        ("2000-01-07", "incremental", "2000-01-01", "complete"),
        ("2000-01-14", "incremental", "2000-01-07", "complete"),
        ("2000-01-21", "full", None, "complete"),
        ("2000-02-01", "incremental", "2000-01-21", "complete"),
    ]
    assert backups[0]["volumes"] > 1, "the test data should span several volumes"
    assert backups[1]["chain"] == backups[0]["id"] and backups[3]["chain"] == backups[3]["id"]

    # The newest day of each chain replays every member of that chain in order.
    target = make_btrfs("dst")
    for day in (DAYS[2], DAYS[4]):
        restored = world.restore(day, target)
        assert_same_tree(world.snapshots / day.isoformat(), restored)
        assert (restored / ODD_NAME).read_text() == "space and newline\n"
        assert is_sparse(restored / "sparse.img")
        assert sorted(p.name for p in target.iterdir()) == [day.isoformat()]
        # The next restore must find an empty target again.
        subprocess.run(
            ["btrfs", "subvolume", "delete", str(restored)], check=True, capture_output=True
        )


def test_every_day_restores_on_local_backend(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    w = make_world(
        make_btrfs("src"), tmp_path, gpg_key, f'backend = "local"\npath = "{tmp_path / "a"}"'
    )
    populate(w.source)
    for n, day in enumerate(DAYS[:4]):
        if n:
            mutate(w.source, n)
        w.run("backup", "--date", day.isoformat())
    for day in DAYS[:4]:
        target = make_btrfs(f"dst-{day}")
        assert_same_tree(w.snapshots / day.isoformat(), w.restore(day, target))


def test_empty_subvolume_round_trip(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> None:
    w = make_world(
        make_btrfs("src"), tmp_path, gpg_key, f'backend = "local"\npath = "{tmp_path / "a"}"'
    )
    w.run("backup", "--date", "2000-01-01")
    [b] = w.list()
    assert b["kind"] == "full" and b["volumes"] == 1
    restored = w.restore(date(2000, 1, 1), make_btrfs("dst"))
    assert list(restored.iterdir()) == []


def test_plan_json_contract(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> None:
    w = make_world(
        make_btrfs("src"), tmp_path, gpg_key, f'backend = "local"\npath = "{tmp_path / "a"}"'
    )
    [p] = json.loads(w.run("plan", "--date", "2000-01-03", "--json").stdout)
    assert p == {
        "source": "data",
        "date": "2000-01-03",
        "action": "full",
        "parent": None,
        "expire": [],
    }
    w.run("backup", "--date", "2000-01-03")
    [p] = json.loads(w.run("plan", "--date", "2000-01-07", "--json").stdout)
    assert (p["action"], p["parent"]) == ("incremental", "2000-01-03")
    # plan changes nothing: the 7th is still owed on the 8th (catch-up) until backed up.
    [p] = json.loads(w.run("plan", "--date", "2000-01-08", "--json").stdout)
    assert p["action"] == "incremental"
    w.run("backup", "--date", "2000-01-08")
    [p] = json.loads(w.run("plan", "--date", "2000-01-09", "--json").stdout)
    assert p["action"] == "none"

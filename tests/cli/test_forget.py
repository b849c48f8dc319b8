"""What ``forget`` shows before deleting: the backups, the early-deletion charge, the local
snapshots it keeps (``forget.assess``, worded by ``forgetting_lines``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from btrsendd.cli.forget import forgetting_lines
from btrsendd.config import SourceConfig
from btrsendd.forget import assess
from btrsendd.units import human_bytes
from tests.cli.helpers import backup, one_error_line
from tests.support.world import World

NOW = datetime(2000, 3, 1, tzinfo=UTC)


def source(tmp_path: Path) -> SourceConfig:
    return SourceConfig(name="data", path=tmp_path / "data", snapshot_dir=tmp_path / "snapshots")


def test_cold_storage_rows_and_their_early_deletion_charge(tmp_path: Path) -> None:
    rows = [
        replace(backup(0, date(2000, 1, 1), "DEEP_ARCHIVE", 2), created_at="2000-01-01T00:00:00Z"),
        replace(
            backup(1, date(2000, 1, 7), "GLACIER", 2),
            created_at="2000-02-20T00:00:00+00:00",
            state="uploading",
        ),
        # An upload time that does not read counts as now: the whole minimum is charged.
        replace(backup(2, date(2000, 1, 9), "STANDARD_IA", 2), created_at="garbage"),
    ]
    assert forgetting_lines(assess(rows, source(tmp_path), NOW)) == [
        "  2000-01-01  full         complete    667.6 MiB    2 volume(s)  DEEP_ARCHIVE  b0",
        "  2000-01-07  incremental  uploading     1.3 GiB    2 volume(s)  GLACIER  b1",
        "  2000-01-09  incremental  complete      2.0 GiB    2 volume(s)  STANDARD_IA  b2",
        "  deleting them now costs about $0.04 in early-deletion charges (cold storage bills "
        "a minimum number of days from upload: DEEP_ARCHIVE 180, GLACIER 90, STANDARD_IA 30)",
    ]


def test_dry_run_shows_the_backup_and_the_snapshot_it_keeps(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    [b] = world.list()
    out = world.run("forget", "--source", "data", "--date", "2000-01-01", "--dry-run")
    stored = human_bytes(b["stored_bytes"])
    assert out.stdout.decode().splitlines() == [
        "Forget data 2000-01-01:",
        f"  2000-01-01  full         complete   {stored:>10}  {b['volumes']:>3} volume(s)  local  "
        f"{b['id']}",
        f"  local snapshots are kept: {world.snapshots / '2000-01-01'} (delete one with "
        "`btrfs subvolume delete PATH` if it is a mistake too)",
        "dry run: nothing was deleted",
    ]
    assert world.list() == [b]


def test_dry_run_json(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    world.run("backup", "--date", "2000-01-07")
    full, inc = world.list()
    out = world.run("forget", "--source", "data", "--date", "2000-01-01", "--dry-run", "--json")
    assert json.loads(out.stdout) == {
        "source": "data",
        "date": "2000-01-01",
        "backups": [full, inc],
        "early_deletion_usd": 0.0,
        "minimum_days": {},
        "local_snapshots_kept": [
            str(world.snapshots / "2000-01-01"),
            str(world.snapshots / "2000-01-07"),
        ],
    }
    assert world.list() == [full, inc]
    refused = world.run("forget", "--source", "data", "--date", "2000-01-01", "--json", check=False)
    assert refused.returncode == 2
    assert one_error_line(refused.stderr) == (
        "btrsendd: error: forget --json only describes what --dry-run would delete: add "
        "--dry-run (forget itself shows the same and asks first)"
    )
    assert world.list() == [full, inc]

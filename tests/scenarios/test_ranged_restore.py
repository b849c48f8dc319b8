"""Restores from S3 read every volume as concurrent ranges, through a network that fails.

A chain of three backups (volumes of two ranges each) is restored through the fault proxy
in front of SeaweedFS: the restored tree equals the snapshot, and a range that failed was
fetched again by itself; a range that keeps failing beyond the retry budget fails the
restore with one line, leaving nothing in the target.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.support.backups import error_lines, try_restore
from tests.support.consistency import restore_and_compare
from tests.support.faults import change_source
from tests.support.impatient import impatient_s3
from tests.support.trees import populate
from tests.support.world import World, make_world

MiB = 1024**2
DAYS = ["2000-01-01", "2000-01-02", "2000-01-03"]


@pytest.fixture
def world(
    make_btrfs: MakeBtrfs,
    gpg_key: GpgKey,
    tmp_path: Path,
    fault_proxy: FaultProxy,
    seaweedfs_server: S3Server,
) -> World:
    """A full backup and two incrementals, in 8 MiB volumes read as 5 MiB ranges."""
    storage = (
        f'backend = "s3"\nbucket = "{seaweedfs_server.new_bucket()}"\n'
        f'endpoint_url = "{fault_proxy.endpoint_url}"\nstorage_class = "STANDARD"'
    )
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, storage)
    w.pipeline = 'compression = "zstd"\nvolume_size = "8MiB"\npart_size = "5MiB"'
    w.schedule = f"backup_days = {list(range(1, 32))}\nmax_incrementals = 2"
    populate(w.source, big=20 * MiB)
    impatient_s3(w, budget=2.0, timeout=1.0)
    for n, day in enumerate(DAYS):
        if n:
            change_source(w, n, 6 * MiB)
        w.run("backup", "--date", day)
    return w


def _ranged_gets(proxy: FaultProxy, since: int) -> list[tuple[str, str]]:
    return [
        (e.key, e.range) for e in proxy.exchanges[since:] if e.operation == "GetObject" and e.range
    ]


def test_a_chain_restores_from_ranges_and_a_failed_range_is_fetched_alone(
    world: World, fault_proxy: FaultProxy, make_btrfs: MakeBtrfs
) -> None:
    since = len(fault_proxy.exchanges)

    def second_range_of_a_volume(request: Request) -> bool:
        return request.operation == "GetObject" and request.headers.get("range", "").startswith(
            f"bytes={5 * MiB}-"
        )

    fault_proxy.inject(
        1.0, seed=2, limit=1, kinds=("reset-response",), match=second_range_of_a_volume
    )
    restore_and_compare(world, make_btrfs("dst"), DAYS[-1])
    assert fault_proxy.faults() == ["reset-response"]
    asked = _ranged_gets(fault_proxy, since)
    volumes = {key for key, _ in asked if "/vol-" in key}
    assert len(volumes) >= 4  # the whole chain's volumes, most of two ranges
    # One range was asked for twice; no other range, and no volume, was fetched again.
    again = [get for get in set(asked) if asked.count(get) > 1]
    assert len(again) == 1 and again[0][1].startswith(f"bytes={5 * MiB}-")
    assert len(asked) == len(set(asked)) + 1


def test_a_range_failing_beyond_the_budget_fails_the_restore_with_one_line(
    world: World, fault_proxy: FaultProxy, make_btrfs: MakeBtrfs
) -> None:
    target = make_btrfs("dst")

    def any_second_range(request: Request) -> bool:
        return request.headers.get("range", "").startswith(f"bytes={5 * MiB}-")

    fault_proxy.inject(1.0, seed=3, limit=10_000, kinds=("503",), match=any_second_range)
    failed = try_restore(world, date.fromisoformat(DAYS[0]), target)
    assert failed.returncode == 1
    [line] = error_lines(failed)
    assert line.startswith("btrsendd: error: restore of backup ")
    assert "/vol-00000.btrfs.zst.gpg failed: SlowDown: Please reduce your request rate.; " in line
    assert "; gave up after " in line
    assert "nothing was changed; run the same command again once the endpoint answers" in line
    assert line.endswith(f"nothing was left in {target}")
    assert list(target.iterdir()) == []

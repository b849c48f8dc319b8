"""Object Lock when the storage refuses part of it: a chain whose older members cannot be
locked longer gets no new member (SeaweedFS behind the fault proxy)."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.fixtures.s3wire import Request
from tests.support.backups import error_lines
from tests.support.impatient import impatient_s3
from tests.support.lockbucket import PREFIX, VersionedBucket, backup_dir, lock_storage
from tests.support.lockworld import EVERY_DAY, ago
from tests.support.trees import mutate, populate
from tests.support.world import make_world


def _retention_request(request: Request) -> bool:
    return request.method == "PUT" and "retention" in request.target.partition("?")[2]


def test_a_chain_that_cannot_be_locked_longer_gets_no_new_member(
    seaweedfs_server: S3Server,
    fault_proxy: FaultProxy,
    make_btrfs: MakeBtrfs,
    gpg_key: GpgKey,
    tmp_path: Path,
) -> None:
    bucket = seaweedfs_server.new_bucket(lock=True, versioned=True)
    storage = lock_storage(seaweedfs_server, "governance", bucket=bucket, margin=1)
    storage = storage.replace(seaweedfs_server.endpoint_url, fault_proxy.endpoint_url)
    world = make_world(make_btrfs("src"), tmp_path, gpg_key, storage)
    world.schedule = f"{EVERY_DAY}\nmax_incrementals = 3\nchain_lifetime_days = 30"
    impatient_s3(world, budget=1.5, timeout=2.0)
    populate(world.source)
    world.run("backup", "--date", ago(2).isoformat())
    [full] = world.list()
    store = VersionedBucket(seaweedfs_server.client(), bucket)
    before = {v: store.retention(v) for v in store.versions(backup_dir(full))}

    # Every retention request fails for longer than the retry budget.
    fault_proxy.inject(1.0, seed=1, limit=10_000, kinds=("503",), match=_retention_request)
    mutate(world.source, 1)
    failed = world.run("backup", "--date", ago(1).isoformat(), check=False)
    assert failed.returncode == 1, failed.stderr.decode()
    [line] = error_lines(failed)
    assert "extending the retention of" in line, line
    assert "Traceback" not in failed.stderr.decode()
    assert world.list() == [full]  # nothing half made, nothing recorded
    assert set(store.everything(f"{PREFIX}/")) == set(before)

    # The storage answers again: the next backup extends the chain first, then joins it.
    fault_proxy.inject(0.0, seed=1, limit=0)
    world.run("backup", "--date", ago(0).isoformat())
    inc = world.list()[-1]
    assert inc["parent_id"] == full["id"]
    for v, (mode, until) in before.items():
        assert store.retention(v)[0] == mode and store.retention(v)[1] > until

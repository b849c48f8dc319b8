"""``pipeline.rate_limit`` and ``--rate-limit``, through the real command line: a limited
backup and restore take their stored bytes over the rate (and not much more), and the
command line overrides the configuration (the daemon's use of it is in
``tests/daemon/test_limits_and_hooks.py``).

The pacing itself, and its sharing between threads, is tested in
``tests/storage/test_throttle.py``; every backend's use of it in ``test_contract.py``.
"""

from __future__ import annotations

import os
from datetime import date

import pytest

from btrsendd.storage.throttle import TOLERANCE
from tests.fixtures.btrfs import MakeBtrfs
from tests.support.backups import OnBackend, events
from tests.support.trees import assert_same_tree
from tests.support.world import World

MiB = 1024**2
#: Beyond size / rate, what a limited upload or receive may take: starting gpg and zstd,
#: the volumes' requests, btrfs receive.
SLACK = 3.0


def paced(event: dict[str, object], stored: int, rate: int) -> float:
    """``event``'s duration, checked to be the stored bytes over the rate, and a little."""
    duration = event["duration"]
    assert isinstance(duration, float | int)
    assert stored / rate - TOLERANCE <= duration <= stored / rate + SLACK, (duration, stored)
    return float(duration)


@pytest.mark.parametrize("backend", ["local", "seaweedfs"])
def test_a_limited_backup_and_restore_take_their_bytes_over_the_rate(
    on_backend: OnBackend, backend: str, make_btrfs: MakeBtrfs
) -> None:
    w = on_backend(backend)
    (w.source / "random").write_bytes(os.urandom(3 * MiB))  # incompressible: stored ~ raw
    proc = w.run("backup", "--date", "2000-01-01", "--rate-limit", "1MiB/s")
    [done] = events(proc, "backup.completed")
    paced(done, done["stored_bytes"], MiB)

    target = make_btrfs("dst") / "restore"
    target.mkdir()
    proc = w.run(*w.restore_args(date(2000, 1, 1), target), "--rate-limit", "2MiB/s")
    [received] = events(proc, "restore.received")
    paced(received, done["stored_bytes"], 2 * MiB)
    assert_same_tree(w.snapshots / "2000-01-01", target / "2000-01-01")


def test_verify_deep_reads_at_the_limit_too(world: World) -> None:
    (world.source / "random").write_bytes(os.urandom(2 * MiB))
    world.run("backup", "--date", "2000-01-01")
    [backup] = world.list()
    proc = world.run(
        "verify", "--deep", "--gnupg-home", str(world.key.secret_home), "--rate-limit", "1MiB/s"
    )
    [received] = events(proc, "restore.received")
    paced(received, backup["stored_bytes"], MiB)


def test_the_command_line_overrides_the_configured_limit(world: World) -> None:
    world.pipeline += '\nrate_limit = "1MiB/s"'
    (world.source / "random").write_bytes(os.urandom(2 * MiB))
    proc = world.run("backup", "--date", "2000-01-01")
    [done] = events(proc, "backup.completed")
    paced(done, done["stored_bytes"], MiB)

    (world.source / "random").write_bytes(os.urandom(2 * MiB))
    proc = world.run("backup", "--date", "2000-01-07", "--rate-limit", "unlimited")
    [done] = events(proc, "backup.completed")
    assert done["duration"] < done["stored_bytes"] / MiB / 2


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("20MiB", "'20MiB' is a size, not a rate: write 20MiB/s"),
        ("20Mb/s", "ambiguous: write 20MB/s for bytes or 20Mbit/s for bits per second"),
        ("0", "is too slow"),
    ],
)
def test_a_nonsense_rate_is_a_usage_error(world: World, rate: str, message: str) -> None:
    proc = world.run("backup", "--rate-limit", rate, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
    assert world.list() == []

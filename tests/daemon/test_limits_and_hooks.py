"""What the daemon does with ``pipeline.rate_limit`` and ``[hooks]``: the same as
``btrsendd backup`` (``tests/cli/test_rate_limit.py``, ``tests/cli/test_hooks.py``), each cycle
with the configuration in force."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.cli.test_rate_limit import MiB, paced
from tests.daemon.helpers import wait_state
from tests.support.daemons import Daemon
from tests.support.hookworld import configure, recorder, seen
from tests.support.world import World


def test_the_daemon_applies_the_configured_limit(
    world: World, start: Callable[..., Daemon]
) -> None:
    world.pipeline += '\nrate_limit = "1MiB/s"'
    (world.source / "random").write_bytes(os.urandom(2 * MiB))
    daemon = start()
    daemon.signal(signal.SIGUSR1)
    done = daemon.wait_for("backup.completed")
    paced(done, done["stored_bytes"], MiB)
    assert daemon.stop() == 0


def test_a_failing_pre_snapshot_is_the_sources_failure_and_the_others_go_on(
    world: World, start: Callable[..., Daemon], tmp_path: Path
) -> None:
    pre = recorder(tmp_path, "pre", 'if [ "$BTRSENDD_SOURCE" = data ]; then exit 4; fi')
    failed = recorder(tmp_path, "failed")
    configure(world, f'pre_snapshot = ["{pre}"]\non_failure = ["{failed}"]', second_source=True)
    daemon = start()
    daemon.signal(signal.SIGUSR1)
    finished = daemon.wait_for("cycle.finished")
    assert finished["results"] == {"data": "failed", "other": "backed up"}
    state = wait_state(world, lambda s: s["sources"].get("other", {}).get("last_success_at"))
    data = state["sources"]["data"]
    assert data["last_error"].startswith(f"hooks.pre_snapshot ({pre}) failed with exit status 4")
    assert data["failures"] == 1 and data["last_success_at"] is None
    assert seen(tmp_path) == [
        ("pre_snapshot", "data"),
        ("on_failure", "data"),
        ("pre_snapshot", "other"),
    ]
    assert [b["source"] for b in world.list()] == ["other"]
    assert daemon.stop() == 0

"""What the daemon does with ``pipeline.rate_limit`` and ``[hooks]``: the same as
``btrsendd backup`` (``tests/cli/test_rate_limit.py``, ``tests/cli/test_hooks.py``), each cycle
with the configuration in force."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from tests.cli.test_rate_limit import MiB, paced
from tests.support.daemons import Daemon
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

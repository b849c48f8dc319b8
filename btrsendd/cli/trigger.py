"""``btrsendd trigger``: ask the running daemon for a backup cycle now (SIGUSR1)."""

from __future__ import annotations

import argparse
import os
import signal
from typing import TYPE_CHECKING

from btrsendd.cli.common import add_command, load_config
from btrsendd.errors import OperationalError

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands


def register(commands: Commands) -> None:
    add_command(
        commands, "trigger", run, "ask the running daemon for a backup cycle now (sends it SIGUSR1)"
    )


#: When the daemon runs the cycle asked for, by the trigger of the cycle it is running.
_WHEN = {
    None: "now",
    "signal": "(it is already running a forced one)",
    "schedule": "after the scheduled one it is running",
}


def run(args: argparse.Namespace) -> int:
    from btrsendd.daemon.state import running_daemon

    config = load_config(args)
    found = running_daemon(config.state_dir)
    if found is None:
        raise OperationalError(
            f"no daemon is running on {config.state_dir}; start it "
            "(systemctl start btrsendd) or back up now with `btrsendd backup --force`"
        )
    pid, state = found
    os.kill(pid, signal.SIGUSR1)
    when = _WHEN.get(None if state.cycle is None else state.cycle.trigger, "now")
    print(
        f"btrsendd daemon (pid {pid}) is running: asked it for a backup cycle {when}; "
        "follow it with `btrsendd status` or `journalctl -u btrsendd -f`"
    )
    return 0

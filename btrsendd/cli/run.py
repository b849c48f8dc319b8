"""``btrsendd run``: the daemon in the foreground (``btrsendd/daemon/``), as systemd runs it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from btrsendd.cli.common import add_command

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands


def register(commands: Commands) -> None:
    add_command(
        commands,
        "run",
        run,
        "run the daemon in the foreground (systemd: Type=notify); backs up on schedule.cron",
    )


def run(args: argparse.Namespace) -> int:
    from btrsendd.config import config_path, load_config
    from btrsendd.daemon.loop import Daemon
    from btrsendd.lock import daemon_lock
    from btrsendd.notify import Notifier

    # The path, not only the configuration: a reload (SIGHUP) reads the file again.
    path = config_path(args.config)
    config = load_config(path)
    notifier = Notifier.from_environment()
    with daemon_lock(config.state_dir):
        return Daemon(path, config, notifier).run()

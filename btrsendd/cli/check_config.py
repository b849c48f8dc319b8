"""``btrsendd check-config``: the configuration and the machine, checked before a first run."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from btrsendd.cli.common import add_command, load_config

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands


def register(commands: Commands) -> None:
    add_command(
        commands,
        "check-config",
        run,
        "validate the configuration and the machine: sources, keys, storage access",
    )


def run(args: argparse.Namespace) -> int:
    from btrsendd import preflight
    from btrsendd.storage import open_storage
    from btrsendd.storage.base import AccessCheck

    config = load_config(args)
    storage = open_storage(config.storage, config.pipeline, config.state_dir)
    check_access = storage.check_access if isinstance(storage, AccessCheck) else None
    findings = preflight.check(config, check_storage=check_access)
    for line in preflight.format_findings(findings):
        print(line, file=sys.stderr)
    if any(f.level == "error" for f in findings):
        return 2
    names = ", ".join(s.name for s in config.sources)
    print(
        f"{config.source_file}: OK ({len(config.sources)} source(s): {names}; "
        f"storage: {storage.description})"
    )
    return 0

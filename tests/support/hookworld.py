"""Hooks for end-to-end tests: small executable scripts in the test's directory, a second
source to show that one source's failure leaves the others alone, and what the hooks saw."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.fixtures.btrfs import make_subvolume
from tests.support.world import World

#: A hook that records, one JSON line per run, its event and every variable it was given,
#: where its stdin comes from, and says hello on its output (for the log).
RECORDER = """#!/bin/sh
python3 -c 'import json, os; print(json.dumps({{"env": dict(os.environ), \\
    "stdin": os.readlink("/proc/self/fd/0"), "cwd": os.getcwd()}}))' >> {log}
echo "hello from $BTRSENDD_EVENT"
{extra}
"""


def script(directory: Path, name: str, body: str) -> Path:
    """An executable script, owned by root and writable by nobody else."""
    path = directory / name
    path.write_text(body)
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path


def recorder(directory: Path, name: str, extra: str = "") -> Path:
    """A recording hook (``RECORDER``) that then runs the shell lines ``extra``."""
    return script(directory, name, RECORDER.format(log=directory / "hooks.log", extra=extra))


def runs(directory: Path) -> list[dict[str, object]]:
    """What every recording hook saw, in the order they ran."""
    log = directory / "hooks.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def seen(directory: Path) -> list[tuple[str, str]]:
    """(event, source) of every recorded run, in order."""
    return [(r["env"]["BTRSENDD_EVENT"], r["env"]["BTRSENDD_SOURCE"]) for r in runs(directory)]  # type: ignore[index]


def configure(world: World, hooks: str, *, second_source: bool = False) -> None:
    """Write the world's configuration with ``[hooks]`` holding ``hooks`` and, if asked, a
    second source "other" (backed up after "data")."""
    other = world.root / "other"
    world.extra = ""
    if second_source:
        if not other.exists():
            make_subvolume(other)
            (other / "file").write_text("other\n")
        world.extra = (
            f'[[sources]]\nname = "other"\npath = "{other}"\n'
            f'snapshot_dir = "{world.root / "other-snapshots"}"\n'
        )
    world.extra += f"[hooks]\n{hooks}\n"
    world.write_config()

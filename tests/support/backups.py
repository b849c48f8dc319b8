"""Worlds with backups in them, and how to read what a command said.

Shared by the restore, verify and rebuild tests: a world on a named backend (``on_backend``),
backed up over days of changing data, and the checks every failing command must pass.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from btrsendd.config import load_config
from btrsendd.restore import POLL_SECONDS_ENV
from btrsendd.storage import open_storage
from btrsendd.storage.base import Storage
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.trees import mutate, populate
from tests.support.world import World, make_world, storage_section

#: Ten backup days: with max_incrementals = 3, chains of 4, 4 and 2 backups.
TEN_DAYS = [date(2000, m, d) for m in (1, 2, 3) for d in (1, 7, 14, 21)][:10]


def backend_world(
    backend: str,
    request: pytest.FixtureRequest,
    make_btrfs: MakeBtrfs,
    key: GpgKey,
    tmp_path: Path,
) -> World:
    """A world on ``backend`` ("local" or "moto") that polls thaws every 50 ms."""
    work = tmp_path / "work"
    work.mkdir()
    w = make_world(make_btrfs("src"), work, key, storage_section(backend, request, work))
    w.env[POLL_SECONDS_ENV] = "0.05"
    return w


def back_up(world: World, days: list[date], *, max_incrementals: int = 3) -> list[dict[str, Any]]:
    """Populate the source, back it up on ``days`` (changing it in between); ``list --json``."""
    world.schedule = f"max_incrementals = {max_incrementals}"
    populate(world.source)
    for n, day in enumerate(days):
        if n:
            mutate(world.source, n)
        world.run("backup", "--date", day.isoformat())
    return world.list()


def world_storage(world: World) -> Storage:
    config = load_config(world.config)
    return open_storage(config.storage, config.pipeline)


def stored_volumes(world: World, backup: dict[str, Any]) -> list[str]:
    """The stored volumes of one backup (as ``list --json`` shows it), in order."""
    listing = world_storage(world).list(f"{backup_prefix(world)}{backup['id']}/")
    return [o.key for o in listing if "/vol-" in o.key]


def backup_prefix(world: World) -> str:
    return "data/" if 'backend = "local"' in world.storage else "host1/data/"


def try_restore(
    world: World, day: date, target: Path, *extra: str, home: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``restore --yes`` that may fail; ``home`` is the keyring (default: the right one)."""
    return world.run(*world.restore_args(day, target, home), *extra, check=False)


def error_lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line for line in proc.stderr.decode().splitlines() if line.startswith("btrsendd: ")]


def events(proc: subprocess.CompletedProcess[bytes], name: str) -> list[dict[str, Any]]:
    """The JSON log events called ``name`` that a command wrote to stderr."""
    found = []
    for line in proc.stderr.decode().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def assert_failed_cleanly(
    proc: subprocess.CompletedProcess[bytes], target: Path, *named: str
) -> str:
    """Exit 1, one error line naming everything in ``named``, and an untouched target."""
    assert proc.returncode == 1, proc.stderr.decode()
    [line] = error_lines(proc)
    for text in named:
        assert text in line, line
    assert list(target.iterdir()) == [], "a failed restore must leave nothing in the target"
    return line


#: ``on_backend("moto")``: a world on that backend, with the session's key.
OnBackend = Callable[[str], World]


@pytest.fixture
def on_backend(
    request: pytest.FixtureRequest, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> OnBackend:
    """Worlds for tests that only choose the backend (most of them)."""
    return partial(
        backend_world, request=request, make_btrfs=make_btrfs, key=gpg_key, tmp_path=tmp_path
    )

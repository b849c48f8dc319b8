"""A world with a source for ``btrsendd run``, and daemons started in it (killed at teardown)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.daemons import Daemon
from tests.support.world import World, local_world


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    work = tmp_path / "work"
    work.mkdir()
    return local_world(make_btrfs("src"), work, gpg_key)


@pytest.fixture
def start(world: World) -> Iterator[Callable[..., Daemon]]:
    """``start(env=None)`` starts a daemon; every daemon is killed at teardown."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None) -> Daemon:
        started.append(Daemon(world, env))
        return started[-1]

    yield make
    for daemon in started:
        daemon.kill()

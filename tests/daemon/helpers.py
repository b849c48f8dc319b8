"""What the daemon tests look at: its published state, its processes; and data to upload."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.world import World


def state_file(world: World) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((world.work / "state" / "daemon.json").read_text())
    return data


def wait_state(world: World, check: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The daemon's published state, once ``check`` holds for it."""
    deadline = time.monotonic() + 30
    while not check(state := state_file(world)):
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return state


def write_random(path: Path, size: int) -> None:
    """Incompressible data: what makes a slow compressor slow."""
    with open(path, "wb") as out:
        out.write(os.urandom(size))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (what `systemctl kill` reaches in the unit's cgroup)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split() if children.exists() else []
        for kid in map(int, kids):
            found += [kid, *descendants(kid)]
    return found

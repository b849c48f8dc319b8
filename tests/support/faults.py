"""Ways to make a backup run fail on purpose, shared by the resume, fault and kill-torture
tests: a faulty zstd, starting btrsendd so that it can be killed with all its children, reading
what a run logged, and the day-to-day changes the backups under test carry.

The faulty zstd works at the pipeline's level: zstd starts once per volume, so its Nth start
is a deterministic point in a backup ("volume N-1 is about to be encoded").  Network faults
live in ``tests.fixtures.faultproxy``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from tests.support.trees import mutate
from tests.support.world import BTRSENDD, World

FAULTY_ZSTD = """#!/bin/sh
# A zstd that misbehaves on its Nth start (one start per volume): exits, hangs, stops early.
real={real}
n=$(($(cat "{counter}" 2>/dev/null || echo 0) + 1))
echo "$n" > "{counter}"
if [ "$n" -eq {nth} ]; then
  {action}
fi
exec "$real" "$@"
"""

#: An ``action`` for ``faulty_zstd`` (format ``size`` in): pass on the first ``size`` bytes
#: zstd writes, then hang, so the run stops in the middle of a volume.
PASS_THEN_HANG = '"$real" "$@" | {{ head -c {size}; sleep 600; }}; exit 0'


def faulty_zstd(world: World, nth: int, action: str) -> Path:
    """Put a zstd on the world's PATH that runs ``action`` on its ``nth`` start (shell code,
    which may use ``"$real"`` for the real zstd); returns its start counter."""
    fake = world.work / "fakebin"
    fake.mkdir(exist_ok=True)
    counter = world.work / "zstd-starts"
    counter.unlink(missing_ok=True)
    script = fake / "zstd"
    real = shutil.which("zstd")
    assert real is not None
    script.write_text(FAULTY_ZSTD.format(counter=counter, nth=nth, action=action, real=real))
    script.chmod(0o755)
    world.env["PATH"] = f"{fake}:{os.environ['PATH']}"
    return counter


def start(world: World, *args: str, stderr: IO[bytes] | int) -> subprocess.Popen[bytes]:
    """Start the real command line in a process group of its own, logging JSON to ``stderr``.

    Its own group is what lets ``kill_all`` take down btrfs send, zstd and gpg with it, as a
    power cut (or systemd's control-group kill) would, and nothing else.
    """
    world.write_config()
    return subprocess.Popen(
        [BTRSENDD, "--config", str(world.config), "--log-format", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, **world.env},
        start_new_session=True,
    )


def kill_all(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s whole process group (see ``start``), reap ``proc``, and wait until
    every member is gone: a child still dying (``btrfs receive`` chrooted into a target)
    keeps its filesystem busy, and a test that unmounts next would fail at random."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {proc.pid} still has members 30 s after SIGKILL")


def change_source(world: World, day: int, new_bytes: int) -> None:
    """Day ``day``'s changes (``trees.mutate``) plus ``new_bytes`` of fresh random data
    replacing the previous day's, so that every incremental spans volumes."""
    mutate(world.source, day)
    (world.source / f"new-{day - 1}.dat").unlink(missing_ok=True)
    (world.source / f"new-{day}.dat").write_bytes(random.Random(f"new-{day}").randbytes(new_bytes))

"""The state directory's locks: one holder at a time, the next one told who holds it, and
nothing left behind by a holder that died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrsendd.errors import OperationalError, UsageError
from btrsendd.lock import backup_running, daemon_lock, restore_lock, state_lock


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def other_holder(state_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the state lock as ``btrsendd backup`` does, until killed."""
    script = textwrap.dedent(f"""\
        import sys, time
        from pathlib import Path
        from btrsendd.lock import state_lock
        with state_lock(Path({str(state_dir)!r}), "backup"):
            print("held", flush=True)
            time.sleep(600)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_holder_is_refused_with_the_first_one_s_name(state_dir: Path) -> None:
    with state_lock(state_dir, "backup"):
        with pytest.raises(OperationalError) as refused, state_lock(state_dir, "forget"):
            pass
        assert backup_running(state_dir)
    message = str(refused.value)
    assert f"{state_dir} is in use by btrsendd backup (pid {os.getpid()})" in message
    assert "`btrsendd trigger`" in message
    # Released with the block: the next holder gets it, and its name is the one recorded.
    assert not backup_running(state_dir)
    with state_lock(state_dir, "forget"):
        assert (state_dir / "lock").read_text() == f"btrsendd forget (pid {os.getpid()})\n"


def test_another_process_holding_it_is_named_and_its_death_frees_it(
    state_dir: Path, other_holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(
        OperationalError, match=rf"in use by btrsendd backup \(pid {other_holder.pid}\)"
    ):
        with state_lock(state_dir, "verify --clean"):
            pass
    assert backup_running(state_dir)
    other_holder.send_signal(signal.SIGKILL)
    other_holder.wait()
    # The kernel released the flock with the process: no stale lock to clear by hand.
    assert not backup_running(state_dir)
    with state_lock(state_dir, "backup"):
        pass


def test_a_second_daemon_is_a_setup_mistake(state_dir: Path) -> None:
    with daemon_lock(state_dir):
        with pytest.raises(UsageError) as refused, daemon_lock(state_dir):
            pass
        # The daemon's life lock and the cycle lock are apart: backups by hand still run.
        with state_lock(state_dir, "backup"):
            pass
    assert refused.value.exit_status == 2
    assert str(refused.value).startswith(
        f"another btrsendd daemon (btrsendd run (pid {os.getpid()})) is already running on "
        f"{state_dir}"
    )


def test_one_restore_per_target(state_dir: Path, tmp_path: Path) -> None:
    with restore_lock(state_dir, str(tmp_path / "a")):
        with restore_lock(state_dir, str(tmp_path / "b")):  # another target: no conflict
            pass
        with (
            pytest.raises(OperationalError) as refused,
            restore_lock(state_dir, str(tmp_path / "a")),
        ):
            pass
    assert str(refused.value) == (
        f"btrsendd restore (pid {os.getpid()}) is writing into {tmp_path / 'a'}; wait for it "
        "to finish"
    )

"""``[hooks]`` through the real ``btrsendd backup``, with real scripts: when each runs and what
it is given, a failing pre_snapshot skips its source (and only it), a hook that runs too long
is killed with its whole process group, a failing notification changes nothing, and programs
others could change are refused (the daemon: ``tests/daemon/test_limits_and_hooks.py``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.cli.helpers import one_error_line
from tests.support.backups import events
from tests.support.hookworld import configure, recorder, runs, script, seen
from tests.support.world import BTRSENDD, World


def hooks_of(directory: Path, **events: str) -> str:
    """``[hooks]`` lines running a recorder for each event (``extra`` shell lines as value)."""
    return "\n".join(
        f'{event} = ["{recorder(directory, event, extra)}"]' for event, extra in events.items()
    )


def test_hooks_run_in_order_with_their_variables_only(world: World, tmp_path: Path) -> None:
    world.env["AWS_SECRET_ACCESS_KEY"] = "SeCrEt"  # the daemon's credentials stay its own
    configure(
        world, hooks_of(tmp_path, pre_snapshot="", post_snapshot="", on_success="", on_failure="")
    )
    proc = world.run("backup", "--date", "2000-01-01")

    assert seen(tmp_path) == [
        ("pre_snapshot", "data"),
        ("post_snapshot", "data"),
        ("on_success", "data"),
    ]
    pre, post, success = runs(tmp_path)
    snapshot = str(world.snapshots / "2000-01-01")
    for run in (pre, post, success):
        env = run["env"]
        assert isinstance(env, dict)
        assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        assert env["LANG"] == "C.UTF-8"
        assert set(env) - {"PWD", "SHLVL", "_"} <= {
            "PATH",
            "LANG",
            "BTRSENDD_SOURCE",
            "BTRSENDD_EVENT",
            "BTRSENDD_MESSAGE",
            "BTRSENDD_SNAPSHOT",
        }
        assert run["stdin"] == "/dev/null" and run["cwd"] == "/"
    assert "BTRSENDD_SNAPSHOT" not in pre["env"]  # type: ignore[operator]
    assert post["env"]["BTRSENDD_SNAPSHOT"] == snapshot  # type: ignore[index]
    assert success["env"]["BTRSENDD_SNAPSHOT"] == snapshot  # type: ignore[index]
    assert success["env"]["BTRSENDD_MESSAGE"].startswith("full backup 2000-01-01-full-")  # type: ignore[index]
    # Their output is in the log.
    outputs = [e["output"] for e in events(proc, "hook.finished")]
    assert outputs == [
        "hello from pre_snapshot",
        "hello from post_snapshot",
        "hello from on_success",
    ]
    assert [b["date"] for b in world.list()] == ["2000-01-01"]


def test_a_failing_pre_snapshot_skips_its_source_and_only_it(world: World, tmp_path: Path) -> None:
    fails_for_data = 'if [ "$BTRSENDD_SOURCE" = data ]; then echo "database busy" >&2; exit 3; fi'
    configure(
        world,
        hooks_of(
            tmp_path, pre_snapshot=fails_for_data, post_snapshot="", on_failure="", on_success=""
        ),
        second_source=True,
    )
    proc = world.run("backup", "--date", "2000-01-01", check=False)

    assert proc.returncode == 1
    assert one_error_line(proc.stderr) == (
        f"btrsendd: error: data: hooks.pre_snapshot ({tmp_path / 'pre_snapshot'}) failed with "
        "exit status 3: database busy; the source was skipped, nothing was backed up"
    )
    # The freeze is thawed all the same; the failure is told; the other source is backed up.
    assert seen(tmp_path) == [
        ("pre_snapshot", "data"),
        ("post_snapshot", "data"),
        ("on_failure", "data"),
        ("pre_snapshot", "other"),
        ("post_snapshot", "other"),
        ("on_success", "other"),
    ]
    failure = runs(tmp_path)[2]["env"]
    assert isinstance(failure, dict)
    assert failure["BTRSENDD_MESSAGE"].startswith("hooks.pre_snapshot (")
    assert [b["source"] for b in world.list()] == ["other"]
    assert not world.snapshots.exists() or list(world.snapshots.iterdir()) == []


def test_a_failing_post_snapshot_fails_its_source_before_the_upload(
    world: World, tmp_path: Path
) -> None:
    configure(world, hooks_of(tmp_path, post_snapshot="exit 1", on_failure=""))
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert "hooks.post_snapshot" in line and "failed with exit status 1" in line
    assert "nothing was uploaded" in line
    assert seen(tmp_path) == [("post_snapshot", "data"), ("on_failure", "data")]
    assert world.list() == []
    # The snapshot stays: the next run of the day uploads it.
    configure(world, "")
    world.run("backup", "--date", "2000-01-01")
    assert [b["snapshot"] for b in world.list()] == ["2000-01-01"]


def test_a_hook_past_its_timeout_is_killed_with_its_process_group(
    world: World, tmp_path: Path
) -> None:
    # A child that ignores SIGTERM, in the background, and a hook that never ends.
    child = tmp_path / "child.pid"
    hang = f"( trap '' TERM; exec sleep 60 ) & echo $! > {child}\nexec sleep 60"
    configure(world, hooks_of(tmp_path, pre_snapshot=hang) + "\ntimeout = 1")
    started = time.monotonic()
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    try:
        assert time.monotonic() - started < 10
        assert proc.returncode == 1
        line = one_error_line(proc.stderr)
        assert "hooks.pre_snapshot" in line
        assert "did not finish within 1 s (hooks.timeout) and was killed" in line
        assert world.list() == []
        assert not _alive(int(child.read_text()))
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(child.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its reaper does not)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def test_a_failing_notification_changes_nothing(world: World, tmp_path: Path) -> None:
    # on_success fails, and leaves a process behind holding its output open: neither
    # holds up the backup or changes its outcome.
    lingering = tmp_path / "lingering.pid"
    configure(
        world,
        hooks_of(tmp_path, on_success=f"sleep 30 & echo $! > {lingering}\nexit 7", on_failure=""),
    )
    try:
        started = time.monotonic()
        proc = world.run("backup", "--date", "2000-01-01")
        assert time.monotonic() - started < 20
        assert proc.returncode == 0 and b"error" not in proc.stderr.replace(
            b'"level": "error"', b""
        )
        [failed] = events(proc, "hook.failed")
        assert failed["hook"] == "on_success" and failed["reason"] == "failed with exit status 7"
        assert seen(tmp_path) == [("on_success", "data")]
        assert [b["date"] for b in world.list()] == ["2000-01-01"]
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(lingering.read_text()), signal.SIGKILL)

    # A failing on_failure leaves the backup's own error the only one.
    (world.source / "new").write_text("x")
    configure(world, 'on_failure = ["/bin/false"]')
    proc = world.run("backup", "--date", "1999-01-01", check=False)
    assert proc.returncode == 1
    assert "earlier than the newest backup" in one_error_line(proc.stderr)
    assert [e["hook"] for e in events(proc, "hook.failed")] == ["on_failure"]


def test_programs_others_could_change_are_refused(world: World, tmp_path: Path) -> None:
    hook = script(tmp_path, "ping", "#!/bin/sh\nexit 0\n")
    hook.chmod(0o777)
    configure(
        world,
        f'on_success = ["{hook}"]\npre_snapshot = ["no-such-program-here"]\n'
        'on_failure = ["no-such-notifier"]',
    )
    proc = world.run("check-config", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert (
        f"error: hooks.on_success: writable by every user (mode 0777), who can change what "
        f"btrsendd runs as root; chmod go-w {hook}"
    ) in err
    assert "error: hooks.pre_snapshot: no-such-program-here is not in the hooks' PATH" in err
    # A notification that cannot run is worth a warning, not a daemon that will not start.
    assert "warning: hooks.on_failure: no-such-notifier is not in the hooks' PATH" in err
    assert "until then it fails at every cycle" in err

    # backup refuses to run it, as a failure of the hook.
    configure(world, f'pre_snapshot = ["{hook}"]')
    proc = world.run("backup", "--date", "2000-01-01", check=False)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert f"hooks.pre_snapshot ({hook}) was not run: writable by every user" in line
    assert world.list() == []


def test_an_interrupted_pre_snapshot_is_killed_and_post_snapshot_still_runs(
    world: World, tmp_path: Path
) -> None:
    started = tmp_path / "pre.pid"
    configure(
        world,
        hooks_of(tmp_path, pre_snapshot=f"echo $$ > {started}\nexec sleep 60", post_snapshot=""),
    )
    proc = subprocess.Popen(
        [BTRSENDD, "--config", str(world.config), "--log-format", "json", "backup"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists() or not started.read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()
    assert not _alive(int(started.read_text()))
    # Whatever pre_snapshot had frozen is thawed on the way out.
    assert seen(tmp_path) == [("pre_snapshot", "data"), ("post_snapshot", "data")]
    assert world.list() == []

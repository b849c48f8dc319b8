"""Hooks: the administrator's programs, run around each source's snapshot and after its cycle.

``[hooks]`` names them as argument lists, run without a shell (nothing is ever split or
expanded), as root, once per source:

- ``pre_snapshot`` right before the snapshot, to bring what lives on the source to a
  consistent state (flush and freeze a database).  If it fails, the source is skipped: no
  snapshot, no upload, and the cycle's error names the hook.
- ``post_snapshot`` right after the snapshot, before anything is uploaded (thaw the
  database).  It runs after every ``pre_snapshot``, also when that or the snapshot failed,
  as a ``finally``: a database left frozen is worse than any backup.  If it fails, the
  source fails too, before the upload: the snapshot stays (the next run of the day backs it
  up) and the error says what is probably still frozen.
- ``on_success`` and ``on_failure`` once the source's cycle has ended (a healthchecks ping,
  a mail).  Their failure is logged and changes nothing else.  A stop (a signal, the daemon
  stopping) is no failure and runs neither.

Each gets ``BTRSENDD_SOURCE``, ``BTRSENDD_EVENT`` (the hook's name), ``BTRSENDD_MESSAGE``
(what happened, in words) and ``BTRSENDD_SNAPSHOT`` (the snapshot's path, once there is one)
in an environment of its own, with ``PATH`` and ``LANG`` and nothing else of btrsendd's:
the daemon's may hold AWS credentials.  Its stdin is ``/dev/null``, its output (the end of
it, ``OUTPUT_LIMIT``) goes to the log, and it runs in a process group of its own, all of
which is killed after ``hooks.timeout`` seconds.  Its program must not be changeable by
anyone but root, as for everything else btrsendd runs as root (``permissions.py``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from btrsendd import permissions
from btrsendd.config import HooksConfig
from btrsendd.errors import OperationalError
from btrsendd.findings import Finding, error, warning
from btrsendd.log import get_logger
from btrsendd.snapshots import Snapshot

Event = Literal["pre_snapshot", "post_snapshot", "on_success", "on_failure"]
EVENTS: tuple[Event, ...] = ("pre_snapshot", "post_snapshot", "on_success", "on_failure")

#: The hooks' whole search path: a program name alone is looked up here, and only here.
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: How much of a hook's output the log keeps: the end, where the reason for a failure is.
OUTPUT_LIMIT = 8 * 1024
#: After the timeout, how long the hook's group has between SIGTERM and SIGKILL.
KILL_GRACE = 5.0
_READ = 64 * 1024


class HookFailed(OperationalError):
    """A hook exited non-zero, was killed, timed out, or could not be run."""


def program_of(argv: Sequence[str]) -> str | None:
    """The file a hook runs: its first argument if a path, else found in ``HOOK_PATH``."""
    if "/" in argv[0]:
        return argv[0]
    return shutil.which(argv[0], path=HOOK_PATH)


def _unrunnable(argv: Sequence[str]) -> str | None:
    """Why a hook's program cannot be run, with what to do; None if it can."""
    program = program_of(argv)
    if program is None:
        return f"{argv[0]} is not in the hooks' PATH ({HOOK_PATH}); give its absolute path"
    if not os.path.isfile(program) or not os.access(program, os.X_OK):
        return f"{program} is not an executable file; chmod 755 it, or fix the path"
    return None


def program_problem(argv: Sequence[str]) -> str | None:
    """Why a hook's program cannot or must not be run, with what to do; None if it can."""
    program = program_of(argv)
    unrunnable = _unrunnable(argv)
    if unrunnable is not None or program is None:
        return unrunnable
    return permissions.program_problem(Path(program))


def findings(config: HooksConfig) -> list[Finding]:
    """``check-config``'s findings: every hook's program exists, runs, and is root's.

    A program others can change is an error whatever the hook.  One that is missing is an
    error for the snapshot hooks (its source could never be backed up) and a warning for a
    notification: refusing to start the daemon over a missing ``curl`` would stop the
    backups the notification is about.
    """
    found = []
    for event in EVENTS:
        argv = getattr(config, event)
        if not argv:
            continue
        key = f"hooks.{event}"
        unrunnable = _unrunnable(argv)
        if unrunnable is not None and event in ("on_success", "on_failure"):
            found.append(warning(key, f"{unrunnable}; until then it fails at every cycle"))
        elif (problem := program_problem(argv)) is not None:
            found.append(error(key, problem))
    return found


class Hooks:
    """The hooks of one source's cycle; it remembers the snapshot once there is one."""

    def __init__(self, config: HooksConfig, source: str) -> None:
        self.config = config
        self.source = source
        self.snapshot: Path | None = None

    def around_snapshot(self, take: Callable[[], Snapshot]) -> Snapshot:
        """``take()`` the snapshot between ``pre_snapshot`` and ``post_snapshot``."""
        try:
            self._run("pre_snapshot", "the snapshot is taken next")
            snap = take()
        except BaseException as exc:
            # Also on an interruption: whatever pre_snapshot froze must be thawed.
            with contextlib.suppress(HookFailed):  # logged; the first failure is the news
                self._run("post_snapshot", f"no snapshot was taken: {exc}")
            if isinstance(exc, HookFailed):
                raise HookFailed(f"{exc}; the source was skipped, nothing was backed up") from None
            raise
        self.snapshot = snap.path
        try:
            self._run("post_snapshot", f"took snapshot {snap.path}")
        except HookFailed as exc:
            raise HookFailed(
                f"{exc}; what pre_snapshot stopped may still be stopped: check it. Snapshot "
                f"{snap.path} was taken, nothing was uploaded (the next run does)"
            ) from None
        return snap

    def notify(self, event: Literal["on_success", "on_failure"], message: str) -> None:
        """Run a notification hook: its failure is logged (by ``_run``) and goes no further."""
        with contextlib.suppress(HookFailed):
            self._run(event, message)

    def _run(self, event: Event, message: str) -> None:
        """Run the hook of ``event``, if there is one; ``HookFailed`` if it fails."""
        argv: tuple[str, ...] = getattr(self.config, event)
        if not argv:
            return
        name = f"hooks.{event} ({argv[0]})"
        log = get_logger(source=self.source).bind(hook=event, program=argv[0])
        problem = program_problem(argv)
        if problem is not None:
            log.error("hook.failed", reason=f"not run: {problem}")
            raise HookFailed(f"{name} was not run: {problem}")
        program = program_of(argv)
        assert program is not None
        env = {
            "PATH": HOOK_PATH,
            "LANG": "C.UTF-8",
            "BTRSENDD_SOURCE": self.source,
            "BTRSENDD_EVENT": event,
            "BTRSENDD_MESSAGE": message,
        }
        if self.snapshot is not None:
            env["BTRSENDD_SNAPSHOT"] = str(self.snapshot)
        try:
            ran = run_program(argv, program, env, self.config.timeout)
        except OSError as exc:
            log.error("hook.failed", reason=f"cannot run: {exc.strerror or exc}")
            raise HookFailed(f"{name} could not be run: {exc.strerror or exc}") from None
        fields = {
            "duration": round(ran.duration, 3),
            "output": ran.output.decode("utf-8", "replace").rstrip(),
            "output_dropped": ran.dropped,
        }
        failure = ran.failure(self.config.timeout)
        if failure is None:
            log.info("hook.finished", **fields)
            return
        log.error("hook.failed", reason=failure, **fields)
        last = ran.last_line()
        raise HookFailed(f"{name} {failure}" + (f": {last}" if last else ""))


@dataclass(frozen=True)
class Ran:
    """How a hook ended, and the end of what it printed."""

    #: Its exit status, minus the signal that killed it, or None if it timed out.
    status: int | None
    output: bytes
    #: How many bytes of output came before ``output`` and were not kept.
    dropped: int
    duration: float

    def failure(self, timeout: float) -> str | None:
        """What went wrong, in words, or None if it exited 0."""
        if self.status is None:
            return f"did not finish within {timeout:g} s (hooks.timeout) and was killed"
        if self.status < 0:
            return f"was killed by {signal.Signals(-self.status).name}"
        return None if self.status == 0 else f"failed with exit status {self.status}"

    def last_line(self) -> str:
        """The last line it printed, usually its reason, cut to a readable length."""
        lines = self.output.decode("utf-8", "replace").strip().splitlines()
        return lines[-1].strip()[:200] if lines else ""


def run_program(argv: Sequence[str], program: str, env: dict[str, str], timeout: float) -> Ran:
    """Run ``program`` as ``argv`` until it exits or ``timeout`` seconds pass, keeping the
    end of its output; on a timeout or an interruption its process group is killed."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        executable=program,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd="/",
        start_new_session=True,
    )
    assert proc.stdout is not None
    tail = _Tail()
    try:
        if not _collect(proc, proc.stdout.fileno(), tail, started + timeout):
            _stop_group(proc)
            return Ran(None, bytes(tail.data), tail.dropped, time.monotonic() - started)
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        proc.stdout.close()
    return Ran(proc.wait(), bytes(tail.data), tail.dropped, time.monotonic() - started)


class _Tail:
    """The last ``OUTPUT_LIMIT`` bytes of a stream, and how many came before them."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - OUTPUT_LIMIT
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess


def _collect(proc: subprocess.Popen[bytes], out: int, tail: _Tail, deadline: float) -> bool:
    """Read the hook's output until it exits (True) or ``deadline`` passes (False).

    Its exit is seen through a pidfd, not the end of its output: a process it left in the
    background may hold the pipe open for much longer.
    """
    pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(out, selectors.EVENT_READ)
            selector.register(pidfd, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    if key.fd == pidfd:
                        _drain(out, tail)
                        return True
                    chunk = os.read(out, _READ)
                    if chunk:
                        tail.add(chunk)
                    else:
                        selector.unregister(out)
            return False
    finally:
        os.close(pidfd)


def _drain(out: int, tail: _Tail) -> None:
    """What the exited hook left in the pipe, without waiting for anyone still holding it."""
    os.set_blocking(out, False)
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(out, _READ):
            tail.add(chunk)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the hook's process group, SIGKILL to what is left of it after a grace.

    Safe after the leader is reaped: Linux does not reuse an id while a group holds it.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

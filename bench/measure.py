"""Timing one command: wall clock, CPU seconds of everything it ran, and peak memory.

CPU comes from ``wait4``: the rusage of one child covers the child and every descendant it
waited for, so a shell pipeline's figure includes ``btrfs send``, the compressor and gpg, and
btrsendd's includes the same tools it starts.  Memory is different: the kernel's
``ru_maxrss`` for a child is the maximum over that child *and* its descendants, so it would
report gpg's or zstd's peak if larger than btrsendd's.  btrsendd's own peak is therefore read
from ``/proc/<pid>/status`` (``VmHWM``, the high-water mark of its resident set), polled while
it runs; the high-water mark only grows, so a poll every few milliseconds misses at most the
last few milliseconds of a process whose memory settled long before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from btrsendd.pipeline.readers import CHUNK

#: How often ``VmHWM`` is read.
POLL_SECONDS = 0.01


class CommandFailed(RuntimeError):
    """A measured command exited non-zero: its numbers would be meaningless."""


@dataclass(frozen=True)
class Sample:
    """One measured run."""

    seconds: float
    #: User + system CPU of the command and all it waited for.
    cpu_seconds: float
    #: Peak resident set of the watched process itself (bytes), when one was watched.
    peak_rss: int | None


def _vm_hwm(pid: int) -> int | None:
    """``VmHWM`` of ``pid`` in bytes; ``None`` once the process is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class _PeakWatcher:
    """Polls one process's ``VmHWM`` on a thread until told to stop; keeps the largest."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-rss", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            value = _vm_hwm(self._pid)
            if value is None:
                return
            self.peak = max(self.peak, value)
            self._stop.wait(POLL_SECONDS)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for ``proc`` with ``wait4``; returns (exit status, CPU seconds)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-2000:]
    return ""


def run(
    argv: Sequence[str],
    *,
    log: Path,
    watch_rss: bool = False,
    stdin: int | IO[bytes] = subprocess.DEVNULL,
) -> Sample:
    """Run ``argv`` to its end and measure it; its output goes to ``log``, failure raises."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=out)
        watcher = _PeakWatcher(proc.pid) if watch_rss else None
        status, cpu = _reap(proc)
        seconds = time.perf_counter() - started
        peak = watcher.stop() if watcher is not None else None
    if status != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {status}; log {log}:\n{_tail(log)}")
    return Sample(seconds=seconds, cpu_seconds=cpu, peak_rss=peak)


def shell(pipeline: str, *, log: Path) -> Sample:
    """Run a bash pipeline as the bare baseline; ``pipefail`` makes any stage's failure count."""
    return run(["bash", "-c", f"set -euo pipefail; {pipeline}"], log=log)


class _Fed(Protocol):
    def feed(self, data: memoryview | bytes) -> None: ...
    def finish(self) -> object: ...


def fed_in_process(path: Path, consumer: _Fed) -> Sample:
    """Feed the send stream saved at ``path`` to ``consumer`` (a ``StreamChecker`` or a
    ``StreamIndexer``) as the pipeline does (reads of ``CHUNK`` into one reused buffer), in
    this process; only the feeding is timed, not the reads.  CPU is this thread's alone."""
    buffer = memoryview(bytearray(CHUNK))
    seconds = cpu = 0.0
    with path.open("rb", buffering=0) as stream:
        while count := stream.readinto(buffer):
            started, started_cpu = time.perf_counter(), time.thread_time()
            consumer.feed(buffer[:count])
            seconds += time.perf_counter() - started
            cpu += time.thread_time() - started_cpu
    consumer.finish()
    return Sample(seconds=seconds, cpu_seconds=cpu, peak_rss=None)


def run_fed(producer: Sequence[str], argv: Sequence[str], *, log: Path) -> Sample:
    """Run ``producer | argv`` and measure ``argv`` alone (its time, CPU and peak RSS).

    The producer stands in for ``btrfs send``: its cost is not btrsendd's.
    """
    feeder = subprocess.Popen(producer, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert feeder.stdout is not None
    try:
        sample = run(argv, log=log, watch_rss=True, stdin=feeder.stdout)
    finally:
        feeder.stdout.close()
        feeder.wait()
    if feeder.returncode != 0:
        raise CommandFailed(f"{' '.join(producer)} exited {feeder.returncode}")
    return sample

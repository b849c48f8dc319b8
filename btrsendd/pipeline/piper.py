"""Pipefail process plumbing: programs joined by OS pipes, failures reported honestly.

The heavy lifting is done by the tools a shell pipeline would use, connected by OS pipes, so
the bytes between them never pass through Python.  Python handles the bytes only at the two
ends of a chain of stages, where it has to (to feed it and to read what comes out).  This
module knows how to run such a chain; what the stages are (a compressor, gpg, ``btrfs
send``) is for ``codec``, ``gpg`` and ``btrfs`` to say.

Two rules keep failures honest, as ``set -o pipefail`` would in a shell:

* **End of stream means success.**  The reader a consumer (an S3 upload, ``btrfs receive``)
  pulls from (``readers.PipeReader``) only reports EOF after every producer behind it has
  exited cleanly; otherwise ``read`` raises the producer's ``PipelineError``.  A stage that
  dies mid-stream therefore makes the consumer fail instead of taking truncated output for
  the whole of it.
* **Nothing outlives a call.**  Every subprocess is reaped and every pipe closed on every
  exit path; a consumer that raises gets its exception back after the stages are killed.

Memory stays flat: bytes move in chunks of at most ``CHUNK``, and only the consumer decides
how much it holds at once (e.g. one multipart part).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO, TYPE_CHECKING

from btrsendd.errors import PipelineError
from btrsendd.pipeline.readers import CHUNK, PipeReader

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: How much of a failed stage's stderr ends up in the error message.
_STDERR_TAIL = 2000


@dataclass(frozen=True)
class Stage:
    """One program in a chain: the name errors use for it and its argument list."""

    name: str
    argv: tuple[str, ...]


def find_tool(stage: str, names: Sequence[str], package: str) -> tuple[str, str]:
    """The first of ``names`` on PATH, as (name, path); fails before any byte is read."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return name, path
    raise PipelineError(stage, f"{' or '.join(names)} not found on PATH: install {package}")


def enlarge(fd: int) -> None:
    """Let the pipe ``fd`` hold a whole ``CHUNK``, where allowed.

    Bigger pipes mean fewer context switches; an unprivileged limit, or an ``fd`` that is
    not a pipe at all, is not an error.
    """
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


def _pipe() -> tuple[int, int]:
    """An OS pipe (close-on-exec, as ``os.pipe`` makes them), enlarged where allowed."""
    read_fd, write_fd = os.pipe()
    enlarge(write_fd)
    return read_fd, write_fd


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def write_all(write: Callable[[memoryview], int], data: ReadableBuffer) -> None:
    """Write all of ``data``: a raw write may take only part of it."""
    view = memoryview(data)
    while view:
        view = view[write(view) :]


def _stderr_tail(stderr: IO[bytes]) -> str:
    """The end of a stage's stderr as one line: the user sees errors as one line."""
    size = stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, size - _STDERR_TAIL))
    text = stderr.read().decode(errors="replace")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


@dataclass
class _Child:
    """A started stage: its process and the temporary file its stderr goes to.

    A file, not a pipe, holds stderr: a chatty tool can then never block on a stderr pipe
    nobody is reading, and the tail is still there to quote once the tool has failed.
    """

    name: str
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]

    @classmethod
    def start(
        cls, stage: Stage, *, stdin: int, stdout: int | None, pass_fds: Sequence[int] = ()
    ) -> _Child:
        """Start ``stage``; ``stdout=None`` sends its stdout to the stderr file too."""
        stderr = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                stage.argv,
                stdin=stdin,
                stdout=stderr if stdout is None else stdout,
                stderr=stderr,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            stderr.close()
            raise PipelineError(
                stage.name, f"cannot start {stage.argv[0]}: {exc.strerror or exc}"
            ) from exc
        return cls(stage.name, proc, stderr)

    def failure(self) -> str | None:
        """Why the (exited) stage failed, with its stderr; ``None`` if it succeeded."""
        status = self.proc.returncode
        if status == 0:
            return None
        if status < 0:
            what = f"killed by signal {-status} ({signal.strsignal(-status)})"
        else:
            what = f"exit status {status}"
        tail = _stderr_tail(self.stderr)
        return f"{what}: {tail}" if tail else what

    def kill(self) -> None:
        """Kill the stage if it still runs, and reap it; idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """``kill``, then release the stderr file; idempotent."""
        self.kill()
        self.stderr.close()


class Flow:
    """Bytes from ``fill`` through ``stages`` (possibly none) to ``output``.

    A feeder thread calls ``fill(buffer)`` for the next chunk (0 at the end) and writes it
    into the first stage, hashing it, while the caller reads ``output`` on its own thread:
    the two ends must run at once or the pipes fill up.  ``on_chunk(count)`` is called from
    the feeder after each chunk.  Use as a context manager; leaving it stops and reaps
    everything.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        fill: Callable[[memoryview], int],
        buffer: memoryview,
        on_chunk: Callable[[int], None] | None,
    ) -> None:
        self._children: list[_Child] = []
        self._input_sha = hashlib.sha256()
        self.input_size = 0
        self._feed_error: BaseException | None = None
        # pipes[i] feeds stage i; the last pipe carries the last stage's output to us.
        pipes: list[tuple[int, int]] = []
        try:
            for _ in range(len(stages) + 1):
                pipes.append(_pipe())
            for i, stage in enumerate(stages):
                child = _Child.start(stage, stdin=pipes[i][0], stdout=pipes[i + 1][1])
                self._children.append(child)
        except BaseException:
            for child in self._children:
                child.stop()
            _close_all([fd for pipe in pipes for fd in pipe])
            raise
        # The stages hold their own copies now; ours would keep the pipes from ever ending.
        _close_all([read_fd for read_fd, _ in pipes[:-1]] + [write_fd for _, write_fd in pipes[1:]])
        self.output = PipeReader(pipes[-1][0], self._finish, digest=True)
        self._feeder = threading.Thread(
            target=self._feed,
            args=(fill, buffer, pipes[0][1], on_chunk),
            name="btrsendd-feeder",
            daemon=True,
        )
        self._feeder.start()

    @property
    def input_sha256(self) -> str:
        return self._input_sha.hexdigest()

    def _feed(
        self,
        fill: Callable[[memoryview], int],
        buffer: memoryview,
        fd: int,
        on_chunk: Callable[[int], None] | None,
    ) -> None:
        write = partial(os.write, fd)
        try:
            while count := fill(buffer):
                chunk = buffer[:count]
                # Write first, hash after: the next stage works on this chunk meanwhile.
                write_all(write, chunk)
                self._input_sha.update(chunk)
                self.input_size += count
                if on_chunk is not None:
                    on_chunk(count)
        except BaseException as exc:
            # Raised to the reader at EOF: a failing source (btrfs send, an S3 download)
            # must fail the stream, not end it early.
            self._feed_error = exc
        finally:
            os.close(fd)

    def _finish(self) -> None:
        """At the end of the output: wait for everything and raise the root cause, if any."""
        self._feeder.join()
        for child in self._children:
            child.proc.wait()
        error = self._failure()
        if error is not None:
            raise error

    def _failure(self) -> BaseException | None:
        feed_error = self._feed_error
        if feed_error is not None and not isinstance(feed_error, BrokenPipeError):
            return feed_error
        failed = [child for child in self._children if child.proc.returncode != 0]
        # A stage killed by SIGPIPE only lost its reader; the stage after it failed first.
        # Otherwise the earliest failure is the cause: later stages just saw short input.
        causes = [child for child in failed if child.proc.returncode != -signal.SIGPIPE]
        if failed:
            culprit = (causes or failed)[0]
            return PipelineError(culprit.name, culprit.failure() or "")
        if feed_error is not None:
            # Every stage exited 0 but one stopped reading early: its output is incomplete.
            return PipelineError(self._children[0].name, "exited before reading all its input")
        return None

    def close(self) -> None:
        """Kill what still runs, unblock and join the feeder, reap the stages; idempotent."""
        for child in self._children:
            if child.proc.poll() is None:
                child.proc.kill()
        self.output.close()
        self._feeder.join()
        for child in self._children:
            child.stop()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def output_of(stage: Stage, what: str) -> Iterator[PipeReader]:
    """Run ``stage`` (its stdin empty) and yield its stdout, ``what`` it makes, as a stream.

    The stream ends (``read`` returns ``b""``) only if the stage exited 0; otherwise
    ``read`` raises its ``PipelineError``.  Leaving the block before the end also raises it,
    since partly read output is a failure; if the block raised, the stage is killed and the
    block's exception propagates.
    """
    read_fd, write_fd = _pipe()
    try:
        child = _Child.start(stage, stdin=subprocess.DEVNULL, stdout=write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)

    def finish() -> None:
        child.proc.wait()
        failure = child.failure()
        if failure is not None:
            raise PipelineError(child.name, failure)

    stream = PipeReader(read_fd, finish, digest=False)
    try:
        yield stream
        if not stream.at_eof:
            raise stream.error or PipelineError(child.name, f"{what} was not read to its end")
    finally:
        stream.close()
        child.stop()


class Sink:
    """A stage that reads what the caller writes to ``stdin``; its stdout and stderr are
    kept together in one file, in the order it wrote them, to quote when it fails.

    Use as a context manager: leaving it closes ``stdin``, kills the stage if it still runs
    and reaps it.
    """

    def __init__(self, stage: Stage, *, pass_fds: Sequence[int] = ()) -> None:
        read_fd, self._stdin = _pipe()
        try:
            self._child = _Child.start(stage, stdin=read_fd, stdout=None, pass_fds=pass_fds)
        except BaseException:
            os.close(self._stdin)
            raise
        finally:
            os.close(read_fd)

    @property
    def stdin(self) -> int:
        """The write end of the stage's stdin."""
        return self._stdin

    @property
    def returncode(self) -> int | None:
        return self._child.proc.returncode

    def _close_stdin(self) -> None:
        if self._stdin >= 0:
            os.close(self._stdin)
            self._stdin = -1

    def finish(self) -> int:
        """End the stage's input and wait for it to exit; returns its exit status."""
        self._close_stdin()
        return self._child.proc.wait()

    def kill(self) -> None:
        """Kill the stage if it still runs, and reap it; idempotent."""
        self._child.kill()

    def output(self) -> str:
        """Everything the stage wrote to stdout and stderr so far."""
        stderr = self._child.stderr
        stderr.seek(0)
        return stderr.read().decode(errors="replace")

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_stdin()
        self._child.stop()

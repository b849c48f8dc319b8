"""The streaming pipeline: btrfs send → volumes → compressor → gpg → storage, and back again.

The heavy lifting is done by the tools a shell pipeline would use (pigz or gzip, zstd, gpg),
connected by OS pipes, so compressed and encrypted bytes move between them without Python
touching them.  Python handles the bytes only at the two ends, where it has to: on the way in
to cut the send stream into volumes and hash the raw bytes, on the way out to hash what is
stored (or, on restore, what is handed to ``btrfs receive``).

Two rules keep failures honest:

* **End of stream means success.**  The reader that a consumer (an S3 upload, ``btrfs
  receive``) pulls from only reports EOF after every producer behind it has exited cleanly;
  otherwise ``read`` raises the producer's ``PipelineError``.  A stage that dies mid-volume
  therefore makes the upload abort instead of storing a truncated volume as if it were whole.
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
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from btrsendd import permissions
from btrsendd.errors import PipelineError, StorageError
from btrsendd.storage.base import Readable, Stored

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from btrsendd.config import EncryptionConfig, PipelineConfig

#: Bytes moved per read or write.  Pipes are enlarged to this size too, so one system call
#: moves a whole chunk and the tools at both ends of a pipe rarely wait for each other.
CHUNK = 1024 * 1024

#: How much of a failed stage's stderr ends up in the error message.
_STDERR_TAIL = 2000

Compression = Literal["gzip", "zstd", "none"]

_EXTENSIONS: dict[Compression, str] = {"gzip": ".gz", "zstd": ".zst", "none": ""}


@dataclass(frozen=True)
class Codec:
    """How stored bytes are produced from raw send-stream bytes (and so how to undo it)."""

    compression: Compression
    level: int
    #: gpg fingerprints; the empty tuple means no encryption (encryption mode "none").
    recipients: tuple[str, ...]
    #: The keyring used to encrypt; ``None`` leaves gpg to its own default (``GNUPGHOME``).
    gnupg_home: Path | None

    @classmethod
    def from_config(cls, pipeline: PipelineConfig, encryption: EncryptionConfig) -> Codec:
        """The codec a configuration asks for, so every caller derives it the same way."""
        return cls(
            compression=pipeline.compression,
            level=pipeline.effective_level,
            recipients=encryption.recipients if encryption.mode == "gpg" else (),
            gnupg_home=encryption.gnupg_home,
        )

    @property
    def suffix(self) -> str:
        """The object-name suffix, e.g. ``btrfs.gz.gpg``: says how to read a volume back."""
        return "btrfs" + _EXTENSIONS[self.compression] + (".gpg" if self.recipients else "")


@dataclass(frozen=True)
class VolumeResult:
    """One stored volume, as the manifest records it."""

    index: int
    raw_offset: int
    raw_length: int
    raw_sha256: str
    stored_size: int
    stored_sha256: str
    #: The storage backend's own checksum (``Stored.checksum``), for ``verify``.
    stored_checksum: str | None


@dataclass(frozen=True)
class DecodedVolume:
    """What decoding one volume saw at both ends, to check against the manifest."""

    stored_size: int
    stored_sha256: str
    raw_length: int
    raw_sha256: str


@dataclass(frozen=True)
class _Stage:
    """One tool in the chain: the name errors use for it and its argument list."""

    name: str
    argv: tuple[str, ...]


def _find_tool(stage: str, names: Sequence[str], package: str) -> tuple[str, str]:
    """The first of ``names`` on PATH, as (name, path); fails before any byte is read."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return name, path
    raise PipelineError(stage, f"{' or '.join(names)} not found on PATH: install {package}")


def _compression_stage(codec: Codec, *, decompress: bool) -> _Stage | None:
    if codec.compression == "none":
        return None
    role = "decompressor" if decompress else "compressor"
    if codec.compression == "gzip":
        # pigz writes the same gzip format as gzip, on every core.
        name, path = _find_tool(f"{role} (gzip)", ("pigz", "gzip"), "pigz")
        # -n: no name or timestamp in the header, so the same input gives the same bytes.
        argv = [path, "-dc"] if decompress else [path, "-c", "-n", f"-{codec.level}"]
    else:
        name, path = _find_tool(f"{role} (zstd)", ("zstd",), "zstd")
        if decompress:
            argv = [path, "-dc", "-q"]
        else:
            # zstd silently caps levels above 19 unless told --ultra.
            ultra = ["--ultra"] if codec.level > 19 else []
            argv = [path, "-T0", *ultra, f"-{codec.level}", "-q", "-c"]
    return _Stage(f"{role} ({name})", tuple(argv))


def _gpg_stage(home: Path | None, operation: Sequence[str]) -> _Stage:
    _, path = _find_tool("gpg", ("gpg",), "gnupg")
    if home is not None and "--encrypt" in operation:
        # Whoever can change the keyring decides whom backups are encrypted to.
        permissions.secure(home, permissions.GNUPG_HOME)
    homedir = ["--homedir", str(home)] if home is not None else []
    # --no-options: no gpg.conf may add recipients (hidden-encrypt-to) or change ciphers.
    # --batch/--no-tty: a daemon has no one to ask; --quiet keeps stderr to real problems.
    argv = [path, "--no-options", "--batch", "--no-tty", "--quiet", *homedir]
    return _Stage("gpg", (*argv, *operation, "--output", "-"))


def _encode_stages(codec: Codec) -> list[_Stage]:
    stages: list[_Stage] = []
    compressor = _compression_stage(codec, decompress=False)
    if compressor is not None:
        stages.append(compressor)
    if codec.recipients:
        recipients = [arg for fpr in codec.recipients for arg in ("--recipient", fpr)]
        # The backup host holds public keys only, unsigned by any local key: trust them as
        # configured.  gpg's own compression is off because the input is already compressed.
        operation = ["--trust-model", "always", "--compress-algo", "none", "--encrypt"]
        stages.append(_gpg_stage(codec.gnupg_home, [*operation, *recipients]))
    return stages


def _decode_stages(codec: Codec, gnupg_home: Path | None) -> list[_Stage]:
    stages: list[_Stage] = []
    if codec.recipients:
        # Loopback pinentry: a key with a passphrase fails at once instead of waiting for a
        # pinentry window nobody will ever see.
        stages.append(_gpg_stage(gnupg_home, ["--pinentry-mode", "loopback", "--decrypt"]))
    decompressor = _compression_stage(codec, decompress=True)
    if decompressor is not None:
        stages.append(decompressor)
    return stages


def _enlarge(fd: int) -> None:
    """Let the pipe ``fd`` hold a whole ``CHUNK``, where allowed.

    Bigger pipes mean fewer context switches; an unprivileged limit, or an ``fd`` that is
    not a pipe at all, is not an error.
    """
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


def _pipe() -> tuple[int, int]:
    """An OS pipe (close-on-exec, as ``os.pipe`` makes them), enlarged where allowed."""
    read_fd, write_fd = os.pipe()
    _enlarge(write_fd)
    return read_fd, write_fd


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _write_all(write: Callable[[memoryview], int], data: ReadableBuffer) -> None:
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
    def start(cls, name: str, argv: Sequence[str], *, stdin: int, stdout: int) -> _Child:
        stderr = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)
        except OSError as exc:
            stderr.close()
            raise PipelineError(name, f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        return cls(name, proc, stderr)

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

    def stop(self) -> None:
        """Kill the stage if it still runs, reap it, release its stderr file; idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


class _PipeReader:
    """File-like reads from a pipe, counted and optionally hashed; EOF only after success.

    ``read(n)`` returns exactly ``n`` bytes unless the stream ends, as a buffered file does:
    S3 multipart uploads read whole parts and would otherwise send undersized ones.  When
    the pipe ends, ``finish`` checks the producers and raises if one failed, so the consumer
    never sees a clean EOF after truncated output.
    """

    def __init__(self, fd: int, finish: Callable[[], None], *, digest: bool) -> None:
        self._fd = fd
        self._finish = finish
        self._sha = hashlib.sha256() if digest else None
        self.size = 0
        self.at_eof = False
        #: What ``finish`` raised, kept so the pipeline's own error is not lost when a
        #: consumer wraps it in one of its own.
        self.error: BaseException | None = None

    @property
    def sha256(self) -> str:
        assert self._sha is not None, "reader created without digest"
        return self._sha.hexdigest()

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill ``buffer`` (fewer bytes only at the end); no allocation, no copy but the
        kernel's.  The bulk path: ``read`` allocates a new object per call."""
        return self._readinto(buffer, fill=True)

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        """Like ``readinto``, but return what the pipe holds as soon as it holds anything
        (0 only at the end).  For a consumer that can use any amount: waiting to fill the
        buffer would leave the stage after it idle meanwhile."""
        return self._readinto(buffer, fill=False)

    def _readinto(self, buffer: WriteableBuffer, *, fill: bool) -> int:
        if self.error is not None:
            raise self.error
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view) and not self.at_eof:
            count = os.readv(self._fd, [view[got:]])
            if not count:
                self._end()
                break
            got += count
            if not fill:
                break
        if self._sha is not None:
            self._sha.update(view[:got])
        self.size += got
        return got

    def read(self, size: int = -1, /) -> bytes:
        if self.error is not None:
            raise self.error
        if self.at_eof or size == 0:
            return b""
        wanted = size if size > 0 else sys.maxsize
        pieces: list[bytes] = []
        got = 0
        while got < wanted:
            data = os.read(self._fd, min(CHUNK, wanted - got))
            if not data:
                self._end()
                break
            if self._sha is not None:
                self._sha.update(data)
            pieces.append(data)
            got += len(data)
        self.size += got
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _end(self) -> None:
        self.close()
        try:
            self._finish()
        except BaseException as exc:
            self.error = exc
            raise
        self.at_eof = True

    def close(self) -> None:
        """Close the pipe: a producer still writing gets EPIPE and stops; idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Flow:
    """Bytes from ``chunks`` through ``stages`` (possibly none) to ``output``.

    A feeder thread writes the chunks into the first stage, hashing them, while the caller
    reads ``output`` on its own thread: the two ends must run at once or the pipes fill up.
    Use as a context manager; leaving it stops and reaps everything.
    """

    def __init__(
        self,
        stages: Sequence[_Stage],
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
                child = _Child.start(
                    stage.name, stage.argv, stdin=pipes[i][0], stdout=pipes[i + 1][1]
                )
                self._children.append(child)
        except BaseException:
            for child in self._children:
                child.stop()
            _close_all([fd for pipe in pipes for fd in pipe])
            raise
        # The stages hold their own copies now; ours would keep the pipes from ever ending.
        _close_all([read_fd for read_fd, _ in pipes[:-1]] + [write_fd for _, write_fd in pipes[1:]])
        self.output = _PipeReader(pipes[-1][0], self._finish, digest=True)
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
                _write_all(write, chunk)
                self._input_sha.update(chunk)
                self.input_size += count
                if on_chunk is not None:
                    on_chunk(count)
        except BaseException as exc:
            # Raised to the reader at EOF: a failing source (btrfs send, an S3 download)
            # must fail the volume, not end it early.
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

    def __enter__(self) -> _Flow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def send_command(snapshot: Path, parent: Path | None) -> list[str]:
    """The ``btrfs send`` command for a full (no parent) or incremental backup.

    ``-q`` is given as the global option: ``btrfs send -q`` is its deprecated alias.  Quiet
    matters because stderr is quoted in errors, and "At subvol ..." is not an error.
    """
    cmd = ["btrfs", "-q", "send"]
    if parent is not None:
        cmd += ["-p", str(parent)]
    return [*cmd, str(snapshot)]


@contextlib.contextmanager
def run_send(cmd: Sequence[str]) -> Iterator[Readable]:
    """Run ``cmd`` (normally ``send_command(...)``) and yield its stdout as a stream.

    The stream ends (``read`` returns ``b""``) only if the command exited 0; otherwise
    ``read`` raises ``PipelineError("btrfs send", stderr)``.  Leaving the block before the
    end also raises it, since a partly read send stream is a failed backup; if the block
    raised, the command is killed and the block's exception propagates.
    """
    read_fd, write_fd = _pipe()
    try:
        child = _Child.start("btrfs send", cmd, stdin=subprocess.DEVNULL, stdout=write_fd)
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

    stream = _PipeReader(read_fd, finish, digest=False)
    try:
        yield stream
        if not stream.at_eof:
            raise stream.error or PipelineError(
                child.name, "the send stream was not read to its end"
            )
    finally:
        stream.close()
        child.stop()


def _readinto(stream: Readable) -> Callable[[memoryview], int]:
    """``stream.readinto`` where it exists (pipes, files: no copy), else ``read`` and a copy."""
    readinto: Callable[[memoryview], int] | None = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto

    def copy(view: memoryview) -> int:
        data = stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    return copy


def sha256_of(stream: Readable) -> str:
    """The SHA-256 of everything ``stream`` yields, read through one reused buffer."""
    sha = hashlib.sha256()
    readinto = _readinto(stream)
    buffer = memoryview(bytearray(CHUNK))
    while count := readinto(buffer):
        sha.update(buffer[:count])
    return sha.hexdigest()


class _Volume:
    """The ``fill`` of one volume: ``volume_size`` bytes at most from ``readinto``.

    Its first call reports the ``first`` bytes that ``encode_volumes`` already read into
    the very buffer the feeder fills (the read that told it the volume exists), so they
    are neither read twice nor copied.
    """

    def __init__(self, readinto: Callable[[memoryview], int], first: int, volume_size: int) -> None:
        self._readinto = readinto
        self._first = first
        self._remaining = volume_size - first

    def __call__(self, view: memoryview) -> int:
        if self._first:
            count, self._first = self._first, 0
            return count
        if self._remaining <= 0:
            return 0
        count = self._readinto(view[: min(len(view), self._remaining)])
        self._remaining -= count
        return count


def _progress(
    start: int, on_progress: Callable[[int], None] | None
) -> Callable[[int], None] | None:
    """Turn per-chunk byte counts into the running total of raw bytes that ``on_progress`` wants."""
    if on_progress is None:
        return None
    done = start

    def advance(count: int) -> None:
        nonlocal done
        done += count
        on_progress(done)

    return advance


def encode_stream(
    raw: Readable,
    codec: Codec,
    volume_size: int,
    store_volume: Callable[[int, Readable], Stored],
    on_progress: Callable[[int], None] | None = None,
) -> list[VolumeResult]:
    """All volumes of ``raw`` at once: ``encode_volumes`` for callers that need no resume."""
    return list(encode_volumes(raw, codec, volume_size, store_volume, on_progress))


def encode_volumes(
    raw: Readable,
    codec: Codec,
    volume_size: int,
    store_volume: Callable[[int, Readable], Stored],
    on_progress: Callable[[int], None] | None = None,
    *,
    first_index: int = 0,
    first_offset: int = 0,
) -> Iterator[VolumeResult]:
    """Split ``raw`` into volumes, compress and encrypt each, and hand each to ``store_volume``.

    Each volume holds ``volume_size`` raw bytes (the last may hold fewer; empty input makes
    no volume).  ``store_volume(index, stored)`` must read ``stored`` to its end and return
    what it stored (``Stored``: size and the backend's checksum); ``stored.read`` raises
    ``PipelineError`` instead of ending if a stage (or ``raw`` itself) failed, so a failed
    volume is never stored whole.
    ``on_progress(raw_bytes_so_far)`` is called from the feeder thread as raw bytes enter
    the pipeline.  Volumes are processed one after the other, which bounds memory, and each
    is yielded once stored, so the caller can record it before the next one starts: that
    record is what a resumed upload skips.  A resumed upload starts numbering at
    ``first_index`` and counting raw bytes at ``first_offset``.
    """
    if volume_size <= 0:
        raise ValueError(f"volume_size must be positive, not {volume_size}")
    stages = _encode_stages(codec)
    index = first_index
    offset = first_offset
    readinto = _readinto(raw)
    # One buffer carries the whole stream into the pipeline, volume after volume.
    buffer = memoryview(bytearray(CHUNK))
    # Read a volume's first chunk before starting its stages: only then is it known that
    # another volume exists at all (an input of exactly N volumes must not make N + 1).
    while first := readinto(buffer[: min(CHUNK, volume_size)]):
        fill = _Volume(readinto, first, volume_size)
        with _Flow(stages, fill, buffer, _progress(offset, on_progress)) as flow:
            stored = flow.output
            try:
                result = store_volume(index, stored)
            except BaseException as exc:
                # A backend may wrap what read() raised in an error of its own; the stage
                # that failed is what the user needs to hear about.
                if stored.error is not None and stored.error is not exc:
                    raise stored.error from None
                raise
            if not stored.at_eof:
                raise StorageError(f"storing volume {index} stopped before the end of its data")
            if result.size != stored.size:
                raise StorageError(
                    f"volume {index}: the storage reports {result.size} bytes stored, "
                    f"but the volume has {stored.size}"
                )
        yield VolumeResult(
            index=index,
            raw_offset=offset,
            raw_length=flow.input_size,
            raw_sha256=flow.input_sha256,
            stored_size=stored.size,
            stored_sha256=stored.sha256,
            stored_checksum=result.checksum,
        )
        index += 1
        offset += flow.input_size


def decode_volume(
    stored: Readable,
    codec: Codec,
    out: IO[bytes] | int,
    *,
    gnupg_home: Path | None = None,
    inspect: Callable[[memoryview], None] | None = None,
) -> DecodedVolume:
    """Decrypt and decompress one stored volume into ``out`` (a file or a file descriptor).

    ``gnupg_home`` overrides ``codec.gnupg_home``: the restore host's keyring, which holds
    the private key, is rarely the backup host's.  Both ends are hashed so the caller can
    check them against the manifest.  ``inspect`` sees every decoded chunk before ``out``
    does, and may refuse it by raising.  A failing stage raises ``PipelineError`` once the
    output ends, after the bytes before the failure were written: the caller must treat
    everything written for this volume as void (e.g. abort ``btrfs receive``).  A failing
    ``out`` (``btrfs receive`` exited) raises its ``OSError``: the caller knows that process.
    """
    stages = _decode_stages(codec, gnupg_home if gnupg_home is not None else codec.gnupg_home)
    write: Callable[[memoryview], int] = (
        partial(os.write, out) if isinstance(out, int) else out.write
    )
    if isinstance(out, int):
        # Usually btrfs receive's stdin, made with the default 64 KiB.
        _enlarge(out)
    buffers = memoryview(bytearray(2 * CHUNK))
    into_stages, out_of_stages = buffers[:CHUNK], buffers[CHUNK:]
    with _Flow(stages, _readinto(stored), into_stages, None) as flow:
        # Whatever arrives goes on at once: btrfs receive works while we wait for more.
        while count := flow.output.readinto1(out_of_stages):
            if inspect is not None:
                inspect(out_of_stages[:count])
            _write_all(write, out_of_stages[:count])
    if not isinstance(out, int):
        out.flush()
    return DecodedVolume(
        stored_size=flow.input_size,
        stored_sha256=flow.input_sha256,
        raw_length=flow.output.size,
        raw_sha256=flow.output.sha256,
    )

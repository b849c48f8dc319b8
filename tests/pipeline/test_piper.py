"""Pipefail process plumbing: chains of real programs, and what is reported when one fails.

The programs are small Python scripts and coreutils whose behaviour each test controls;
the codec's own chains (pigz, zstd, gpg) are tested in ``test_codec.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from btrsendd.errors import PipelineError
from btrsendd.pipeline.btrfs import run_send
from btrsendd.pipeline.codec import encode_stream
from btrsendd.pipeline.piper import Flow, Sink, Stage, enlarge, find_tool, output_of
from btrsendd.pipeline.readers import CHUNK
from btrsendd.storage.base import Readable, Stored
from tests.fixtures.gpg import GpgKey
from tests.pipeline.support import (
    MemoryStore,
    MiB,
    child_processes,
    codec_for,
    python_command,
    random_data,
)

#: The programs these tests start, to check none is left behind.
PROGRAMS = {Path(sys.executable).name[:15], "yes"}


def python(name: str, code: str) -> Stage:
    return Stage(name, tuple(python_command(code)))


COPY = "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer)"
UPPER = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())"


def flow_of(
    stages: list[Stage], fill: Callable[[memoryview], int]
) -> tuple[bytes | BaseException, Flow]:
    """Run ``fill`` through ``stages``; what came out (or what reading it raised), and the
    flow, closed."""
    with Flow(stages, fill, memoryview(bytearray(CHUNK)), None) as flow:
        try:
            out: bytes | BaseException = flow.output.read()
        except Exception as exc:
            out = exc
    return out, flow


# --- chains that work --------------------------------------------------------------------


def test_no_stages_passes_the_bytes_and_hashes_both_ends() -> None:
    data = random_data(3 * MiB + 5)
    out, flow = flow_of([], io.BytesIO(data).readinto)
    assert out == data
    assert flow.input_size == flow.output.size == len(data)
    assert flow.input_sha256 == flow.output.sha256 == hashlib.sha256(data).hexdigest()
    assert child_processes(PROGRAMS) == []


def test_stages_run_in_order() -> None:
    stages = [python("upper", UPPER), python("copy", COPY)]
    out, flow = flow_of(stages, io.BytesIO(b"abc" * 100_000).readinto)
    assert out == b"ABC" * 100_000
    assert flow.output.sha256 == hashlib.sha256(b"ABC" * 100_000).hexdigest()
    assert child_processes(PROGRAMS) == []


# --- the root cause ------------------------------------------------------------------------


def test_the_earliest_failure_is_the_cause() -> None:
    """The stage after a failed one saw short input and may have exited 0 on it."""
    fails = python("first", "import sys; sys.stdin.buffer.read(); sys.exit('boom')")
    out, _ = flow_of([fails, python("second", COPY)], io.BytesIO(b"data").readinto)
    assert isinstance(out, PipelineError)
    assert (out.stage, out.detail) == ("first", "exit status 1: boom")
    assert child_processes(PROGRAMS) == []


def test_a_stage_killed_by_sigpipe_only_lost_its_reader() -> None:
    gives_up = python("second", "import sys; sys.stdin.buffer.read(10); sys.exit('gave up')")
    out, _ = flow_of([Stage("yes", ("yes",)), gives_up], io.BytesIO(b"").readinto)
    assert isinstance(out, PipelineError)
    assert (out.stage, out.detail) == ("second", "exit status 1: gave up")
    assert child_processes(PROGRAMS) == []


def test_a_failing_source_fails_the_output_instead_of_ending_it() -> None:
    source = io.BytesIO(random_data(3 * MiB))

    def fill(view: memoryview) -> int:
        if source.tell() >= MiB:
            raise RuntimeError("the download broke")
        return source.readinto(view)

    out, _ = flow_of([python("copy", COPY)], fill)
    assert isinstance(out, RuntimeError) and str(out) == "the download broke"
    assert child_processes(PROGRAMS) == []


def test_a_stage_that_stops_reading_early_fails_even_if_it_exits_0() -> None:
    lazy = python("lazy", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read(10))")
    out, _ = flow_of([lazy], io.BytesIO(random_data(8 * MiB)).readinto)
    assert isinstance(out, PipelineError)
    assert (out.stage, out.detail) == ("lazy", "exited before reading all its input")
    assert child_processes(PROGRAMS) == []


def test_killed_compressor_is_named(gpg_key: GpgKey) -> None:
    """gpg encrypts the truncated stream and exits 0: only the compressor knows it failed."""

    def kill_zstd(done: int) -> None:
        for child in child_processes():
            pid, comm, _ = child.split()
            if comm == "zstd":
                os.kill(int(pid), signal.SIGKILL)

    store = MemoryStore()
    with pytest.raises(PipelineError) as info:
        encode_stream(
            io.BytesIO(random_data(8 * MiB)), codec_for("zstd", gpg_key), 64 * MiB, store, kill_zstd
        )
    assert info.value.stage == "compressor (zstd)"
    assert "signal 9" in info.value.detail
    assert store.volumes == {}
    assert child_processes() == []


# --- nothing outlives a call ---------------------------------------------------------------


def test_leaving_early_kills_and_reaps_every_stage() -> None:
    endless = io.BytesIO(random_data(MiB))
    with Flow(
        [
            python("copy", COPY),
            Stage("yes", ("yes",)),
            python("sleeper", "import time; time.sleep(60)"),
        ],
        endless.readinto,
        memoryview(bytearray(CHUNK)),
        None,
    ) as flow:
        assert flow.output.read(0) == b""
    assert child_processes(PROGRAMS) == []


def test_store_raising_kills_everything(gpg_key: GpgKey) -> None:
    def failing_store(index: int, stream: Readable) -> Stored:
        stream.read(100_000)
        raise RuntimeError("disk full")

    endless = python_command("import os\nwhile True: os.write(1, os.urandom(65536))")
    with pytest.raises(RuntimeError, match="disk full"):
        with run_send(endless) as raw:
            encode_stream(raw, codec_for("gzip", gpg_key), MiB, failing_store)
    assert child_processes() == []


# --- one program's output, one program's input ---------------------------------------------


def test_output_of_ends_only_after_success() -> None:
    with output_of(python("talker", "print('hello')"), "the greeting") as out:
        assert out.read() == b"hello\n"
    with pytest.raises(PipelineError) as info:
        with output_of(python("talker", "print('hel'); raise SystemExit('lost')"), "it") as out:
            out.read()
    assert (info.value.stage, info.value.detail) == ("talker", "exit status 1: lost")
    with pytest.raises(PipelineError, match="the greeting was not read to its end"):
        with output_of(python("talker", "print('hello')"), "the greeting") as out:
            out.read(2)
    assert child_processes(PROGRAMS) == []


def test_sink_keeps_what_the_program_said_and_its_status() -> None:
    code = (
        "import sys; data = sys.stdin.buffer.read(); print(f'got {len(data)}', flush=True); "
        "print('and failed', file=sys.stderr); sys.exit(4)"
    )
    with Sink(python("reader", code)) as sink:
        os.write(sink.stdin, b"x" * 1000)
        assert sink.finish() == 4
        assert sink.output().splitlines() == ["got 1000", "and failed"]
        assert sink.returncode == 4
    with Sink(python("sleeper", "import time; time.sleep(60)")):
        pass  # left without finishing: killed and reaped
    assert child_processes(PROGRAMS) == []


# --- tools and pipes -----------------------------------------------------------------------


def test_a_missing_tool_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PipelineError) as info:
        find_tool("squasher", ("squash", "squash2"), "squash-tools")
    assert str(info.value) == (
        "squasher failed: squash or squash2 not found on PATH: install squash-tools"
    )
    (tmp_path / "squash2").write_text("#!/bin/sh\n")
    (tmp_path / "squash2").chmod(0o755)
    assert find_tool("squasher", ("squash", "squash2"), "squash-tools") == (
        "squash2",
        str(tmp_path / "squash2"),
    )


def test_enlarge_a_pipe_and_nothing_else(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        enlarge(write_fd)
        assert fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ) == CHUNK
    finally:
        os.close(read_fd)
        os.close(write_fd)
    with (tmp_path / "file").open("wb") as file:
        enlarge(file.fileno())  # not a pipe: left alone, no error

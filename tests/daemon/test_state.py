"""``daemon.json``: written whole, read back as the records it was written from, and never a
reason to fail when it is old, damaged or names a process that is not a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrsendd.daemon.state import (
    STATE_FILE,
    CycleRecord,
    PublishedState,
    SourceRecord,
    live_pid,
    read_state,
    running_daemon,
    write_state,
)


def published(pid: int | None = 4242) -> PublishedState:
    return PublishedState(
        pid=pid,
        version="0.1.0",
        config="/etc/btrsendd/btrsendd.toml",
        started_at="2026-11-26T00:00:00+01:00",
        state="running",
        status="uploading data 5.0 MiB at 1.0 MiB/s",
        next_run="2026-11-27T00:00:00+01:00",
        last_scheduled="2026-11-26T00:00:00+01:00",
        cycle=CycleRecord(
            "signal",
            "2026-11-26",
            "2026-11-26T10:00:00+01:00",
            "data",
            5,
            1.5,
            100,
            "the last full backup, 2026-11-01",
            63.0,
        ),
        sources={
            "data": SourceRecord(
                last_run_at="2026-11-25T00:00:00+01:00",
                last_result="failed",
                last_error="gpg failed",
                last_error_at="2026-11-25T00:00:01+01:00",
                failures=2,
                uploaded_bytes=1000,
            )
        },
    )


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    state = published()
    write_state(tmp_path, state)
    assert state.updated_at is not None
    assert read_state(tmp_path) == state
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary left
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600
    # The file's keys, for scripts reading it: those of the records, stamped last.
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert list(doc)[-1] == "updated_at"
    assert doc["cycle"] == {
        "trigger": "signal",
        "date": "2026-11-26",
        "started_at": "2026-11-26T10:00:00+01:00",
        "source": "data",
        "bytes": 5,
        "rate": 1.5,
        "total": 100,
        "estimate": "the last full backup, 2026-11-01",
        "eta": 63.0,
    }


def test_an_older_version_s_file_keeps_what_it_has(tmp_path: Path) -> None:
    # Before per-source failure counts and upload totals, and before updated_at.
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": 7,
                "state": "stopped",
                "last_scheduled": "2026-11-26T00:00:00+01:00",
                "sources": {"data": {"last_run_at": "2026-11-25T00:00:00+01:00"}},
            }
        )
    )
    state = read_state(tmp_path)
    assert state is not None
    assert state.last_scheduled == "2026-11-26T00:00:00+01:00"
    assert state.sources == {"data": SourceRecord(last_run_at="2026-11-25T00:00:00+01:00")}
    assert (state.version, state.updated_at, state.cycle) == (None, None, None)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '"daemon"', "null", "[" * 100_000])
def test_a_file_that_is_not_an_object_is_no_state(tmp_path: Path, text: str) -> None:
    (tmp_path / STATE_FILE).write_text(text)
    assert read_state(tmp_path) is None
    assert running_daemon(tmp_path) is None


def test_no_file_is_no_state(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None


def test_fields_of_the_wrong_type_read_as_their_defaults(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": "4242",
                "state": 3,
                "last_scheduled": 20261126,
                "cycle": {"trigger": "signal", "date": "2026-11-26"},  # no started_at
                "sources": {
                    "data": {"failures": "many", "uploaded_bytes": True, "last_error": ["x"]},
                    "home": "not a record",
                },
            }
        )
    )
    state = read_state(tmp_path)
    assert state is not None
    assert (state.pid, state.state, state.last_scheduled, state.cycle) == (
        None,
        "starting",
        None,
        None,
    )
    assert state.sources == {"data": SourceRecord()}
    assert live_pid(state) is None


@pytest.fixture
def impostor() -> Iterator[int]:
    """A running process that is not ``btrsendd run``: what a stale pid may now name."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_only_a_running_daemon_is_live(tmp_path: Path, impostor: int) -> None:
    assert live_pid(published(pid=impostor)) is None
    assert live_pid(published(pid=None)) is None
    # This test's own process is no daemon either, whatever its state says.
    assert live_pid(published(pid=os.getpid())) is None
    write_state(tmp_path, published(pid=impostor))
    assert running_daemon(tmp_path) is None

"""``<state_dir>/interrupted.json``: each source's interruptions counted by cause, the last one
kept whole, and a file that is damaged or of another version read as what it can be."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from btrsendd.errors import OperationalError
from btrsendd.interrupt import Cancelled, Interrupted
from btrsendd.interruptions import (
    FILE,
    Interruption,
    SourceInterruptions,
    read_interruptions,
    record_interruption,
)


def test_each_source_counts_by_cause_and_keeps_its_last(tmp_path: Path) -> None:
    stop = Interruption.of(Cancelled("SIGTERM"), "b1", "2000-01-01", 3, "resume")
    record_interruption(tmp_path, "home", stop)
    record_interruption(tmp_path, "home", Interruption.of(Interrupted(signal.SIGINT)))
    failure = Interruption.of(OperationalError("zstd failed"), "b2", "2000-01-02", 0, "discarded")
    record_interruption(tmp_path, "srv", failure)

    records = read_interruptions(tmp_path)
    home, srv = records["home"], records["srv"]
    assert (home.by_signal, home.by_error, srv.by_signal, srv.by_error) == (2, 0, 0, 1)
    assert home.last is not None and srv.last == failure
    assert (home.last.signal, home.last.reason) == ("SIGINT", "stopped by SIGINT (Ctrl-C)")
    assert home.last.backup_id is None
    assert (stop.signal, stop.reason) == ("SIGTERM", "the daemon was stopped by SIGTERM")
    assert (tmp_path / FILE).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # no temporary left


@pytest.mark.parametrize("text", ["", "{", "[1]", "null", '"x"', "[" * 100_000])
def test_a_file_that_is_not_an_object_records_nothing(tmp_path: Path, text: str) -> None:
    (tmp_path / FILE).write_text(text)
    assert read_interruptions(tmp_path) == {}
    # ... and is replaced whole by the next record.
    record_interruption(tmp_path, "home", Interruption.of(Interrupted(signal.SIGTERM)))
    assert read_interruptions(tmp_path)["home"].by_signal == 1


def test_records_of_the_wrong_shape_read_as_none(tmp_path: Path) -> None:
    good = {"at": "2026-11-26T01:00:00+01:00", "signal": "SIGTERM", "reason": "stopped"}
    (tmp_path / FILE).write_text(
        json.dumps(
            {
                "home": {"by_signal": True, "by_error": -3, "last": {**good, "at": "yesterday"}},
                "srv": {"by_signal": 4, "last": {**good, "volumes_stored": "3"}},
                "data": {"by_error": 1, "last": {**good, "future_field": [1]}},
                "odd": ["not", "a", "record"],
            }
        )
    )
    records = read_interruptions(tmp_path)
    assert records["home"] == SourceInterruptions()
    assert records["srv"] == SourceInterruptions(by_signal=4)
    # Fields added by a later version are ignored, the rest kept.
    assert records["data"] == SourceInterruptions(by_error=1, last=Interruption(**good))
    assert "odd" not in records


def test_a_state_directory_it_cannot_write_to_is_not_a_failure(tmp_path: Path) -> None:
    # (Root writes through any mode: a directory that is gone fails for everyone.)
    gone = tmp_path / "gone"
    record_interruption(gone, "home", Interruption.of(Interrupted(signal.SIGTERM)))
    assert read_interruptions(gone) == {}

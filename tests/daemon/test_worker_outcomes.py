"""What a source's cycle is recorded as when the daemon is stopping: a stop is "aborted", an
error is still a failure (its ``on_failure`` hook has run, so ``status`` must agree)."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from btrsendd.daemon.publisher import Publisher
from btrsendd.daemon.state import PublishedState
from btrsendd.daemon.worker import CycleWorker
from btrsendd.errors import OperationalError
from btrsendd.interrupt import Cancelled
from btrsendd.notify import Notifier


class _Cycle:
    """A cycle that ends the way a real one would when the daemon stops during it."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def run(self, src: Any, day: date, *, force: bool) -> Any:
        raise self.exc


def _worker(tmp_path: Path) -> CycleWorker:
    state = PublishedState(pid=1, version="t", config="c", started_at="2026-12-05T00:00:00+00:00")
    published = Publisher(tmp_path, state, Notifier(None), lambda: None)
    stopping = threading.Event()
    stopping.set()
    return CycleWorker(published, lambda: None, stopping)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("exc", "result", "failures"),
    [
        (Cancelled("SIGTERM"), "aborted", 0),
        (OperationalError("the bucket refused the upload"), "failed", 1),
    ],
)
def test_a_stop_is_aborted_and_an_error_while_stopping_is_a_failure(
    tmp_path: Path, exc: Exception, result: str, failures: int
) -> None:
    worker = _worker(tmp_path)
    src = SimpleNamespace(name="home")
    got = worker._source(_Cycle(exc), src, date(2026, 12, 5), False)  # type: ignore[arg-type]
    record = worker.published.state.sources["home"]
    assert got == result
    assert record.failures == failures
    if failures:
        assert record.last_error == "the bucket refused the upload"
    else:
        assert record.last_result == "interrupted: the daemon was stopped by SIGTERM"

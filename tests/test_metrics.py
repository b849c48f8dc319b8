"""The Prometheus textfile: written atomically, and never through a link someone planted."""

from __future__ import annotations

import os
from pathlib import Path

from btrsendd.interruptions import Interruption, SourceInterruptions
from btrsendd.metrics import SourceFacts, render, write_textfile


def test_textfile_is_replaced_whole_and_readable_by_the_collector(tmp_path: Path) -> None:
    path = tmp_path / "btrsendd.prom"
    path.write_text("old\n")
    text = render({"home": SourceFacts("2026-11-26T00:00:00+00:00", None, 2, 42)}, [])
    write_textfile(path, text)
    assert path.read_text() == text
    assert 'btrsendd_failures_total{source="home"} 2' in text
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["btrsendd.prom"]  # no temporary left


def test_planted_symlinks_are_not_written_through(tmp_path: Path) -> None:
    # The collector's directory is writable by its own user, who plants links named like
    # every temporary file a predictable writer could use, pointing at a root-owned file.
    shared = tmp_path / "textfile"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)
    victim = tmp_path / "shadow"
    victim.write_text("root's secret\n")
    for pid in range(os.getpid() - 5, os.getpid() + 5):
        (shared / f".btrsendd.prom.{pid}.tmp").symlink_to(victim)
    write_textfile(shared / "btrsendd.prom", "btrsendd_up 1\n")
    assert victim.read_text() == "root's secret\n"
    assert (shared / "btrsendd.prom").read_text() == "btrsendd_up 1\n"


def test_interruptions_are_counted_by_cause_with_the_last_one_s_time() -> None:
    last = Interruption("2026-11-26T01:00:00+00:00", "SIGTERM", "the daemon was stopped by SIGTERM")
    stops = SourceInterruptions(by_signal=2, by_error=1, last=last)
    text = render(
        {
            "home": SourceFacts(None, None, 0, 0, stops),
            "srv": SourceFacts(None, None, 0, 0),
        },
        [],
    )
    assert 'btrsendd_interrupted_total{source="home",cause="signal"} 2' in text
    assert 'btrsendd_interrupted_total{source="home",cause="error"} 1' in text
    assert 'btrsendd_last_interrupted_timestamp_seconds{source="home"} 1795654800' in text
    # Never interrupted: counted as zero, so a rate() has a series to start from.
    assert 'btrsendd_interrupted_total{source="srv",cause="signal"} 0' in text
    assert 'btrsendd_last_interrupted_timestamp_seconds{source="srv"}' not in text
    assert "# TYPE btrsendd_interrupted_total counter" in text

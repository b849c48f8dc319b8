"""Progress on a terminal, through the real command line on a pseudo-terminal: restore shows
volume n/N, bytes of the chain's total, percent and ETA right after its question, and what it
waits for while objects thaw; a backup shows an estimate and where it comes from; and no log
line ever starts in the middle of the progress line (each one erases it first, and it is
drawn again below).
"""

from __future__ import annotations

import os
import re
from datetime import date

from tests.fixtures.btrfs import MakeBtrfs
from tests.support.backups import OnBackend
from tests.support.terminal import plain, run_on_terminal, screen
from tests.support.trees import assert_same_tree, populate
from tests.support.world import World

#: A week apart: each day after the first has an incremental due.
DAYS = [date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14)]

#: Where a log line begins (the console renderer's ISO timestamp).
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
ERASE = "\r\x1b[K"


def assert_log_lines_start_lines(output: str) -> list[str]:
    """Every log line begins a line of its own, never after part of a progress line, and
    nothing of a progress line is left on the screen; returns the screen's lines."""
    text = plain(output)
    starts = list(LOG_LINE.finditer(text))
    assert starts, text
    for found in starts:
        before = text[: found.start()]
        assert before == "" or before.endswith(("\n", ERASE)), repr(text[found.start() - 80 :])
    lines = screen(output)
    for line in lines:
        assert not LOG_LINE.search(line) or LOG_LINE.match(line), line
        assert "/s" not in line or LOG_LINE.match(line), f"a progress line was left: {line!r}"
    return lines


def test_restore_shows_volumes_percent_and_eta_and_logs_above_them(
    world: World, make_btrfs: MakeBtrfs
) -> None:
    populate(world.source, big=4 * 1024**2)
    world.run("backup", "--date", DAYS[0].isoformat())
    (world.source / "more.dat").write_bytes(os.urandom(2 * 1024**2))
    world.run("backup", "--date", DAYS[1].isoformat())
    target = make_btrfs("dst")
    status, output = run_on_terminal(
        world,
        "restore",
        "--source",
        "data",
        "--date",
        DAYS[1].isoformat(),
        "--target",
        str(target),
        "--gnupg-home",
        str(world.key.secret_home),
        answers={b"Proceed? [y/N] ": b"y\n"},
    )
    assert status == 0, output
    text = plain(output)
    # Right after the answer: the progress line, before anything else.
    after = text.split("Proceed? [y/N] y\n", 1)[1]
    assert after.startswith(f"{ERASE}data 2000-01-07: "), after[:200]
    drawn = re.findall(rf"{re.escape(ERASE)}(data 2000-01-07: [^\r\n]*)", text)
    volumes = int(re.findall(r"volume \d+/(\d+)", text)[0])
    assert volumes >= 7  # a full of 6 or more volumes and an incremental of 2 or more
    last = [line for line in drawn if f"volume {volumes}/{volumes}," in line]
    assert last, drawn
    assert re.fullmatch(
        rf"data 2000-01-07: volume {volumes}/{volumes}, [\d.]+ MiB of [\d.]+ MiB \(\d+%\) "
        r"at [\d.]+ [KMG]iB/s, ETA \d+:\d\d:\d\d",
        last[0],
    ), last[0]
    lines = assert_log_lines_start_lines(output)
    # The first member was received while the progress line stood: logged above it.
    assert any("restore.received" in line for line in lines)
    assert lines[-2:] == [f"restored data {DAYS[1]} to {target / DAYS[1].isoformat()}", ""]
    assert_same_tree(world.snapshots / DAYS[1].isoformat(), target / DAYS[1].isoformat())


def test_backup_shows_an_estimate_and_where_it_comes_from(world: World) -> None:
    populate(world.source, big=3 * 1024**2)
    status, output = run_on_terminal(world, "backup", "--date", DAYS[0].isoformat())
    assert status == 0, output
    assert re.search(
        r"data full 2000-01-01: [\d.]+ \w+ of ~[\d.]+ \w+ \(~\d+%\).* \(estimate: the space "
        r"used on the source's filesystem\)",
        plain(output),
    ), output
    lines = assert_log_lines_start_lines(output)
    assert lines[-2].startswith("data 2000-01-01: full backup"), lines

    # The first incremental has nothing to go by: bytes and rate only; the next one has.
    for day in DAYS[1:]:
        (world.source / f"{day}.dat").write_bytes(os.urandom(1024**2))
        status, output = run_on_terminal(world, "backup", "--date", day.isoformat())
        assert status == 0, output
        assert_log_lines_start_lines(output)
    assert "(estimate: the last incremental backup, 2000-01-07)" in plain(output), output


def test_restore_says_what_it_waits_for_while_objects_thaw(
    on_backend: OnBackend, make_btrfs: MakeBtrfs
) -> None:
    # moto keeps Glacier's rule: a DEEP_ARCHIVE object is read only once it is thawed.
    world = on_backend("moto")
    populate(world.source)
    world.run("backup", "--date", DAYS[0].isoformat())
    target = make_btrfs("dst")
    status, output = run_on_terminal(
        world,
        "restore",
        "--source",
        "data",
        "--date",
        DAYS[0].isoformat(),
        "--target",
        str(target),
        "--tier",
        "Bulk",
        "--gnupg-home",
        str(world.key.secret_home),
        answers={b"Proceed? [y/N] ": b"y\n"},
    )
    assert status == 0, output
    assert re.search(
        r"\r\x1b\[Kdata 2000-01-01: waiting \d:\d\d:\d\d for (\d+) of \1 object\(s\) to be "
        r"restored from cold storage \(tier Bulk\); next check at \d\d:\d\d:\d\d",
        plain(output),
    ), output
    assert re.search(r"data 2000-01-01: volume \d+/\d+, .* \(\d+%\)", plain(output)), output
    assert_log_lines_start_lines(output)
    assert_same_tree(world.snapshots / DAYS[0].isoformat(), target / DAYS[0].isoformat())

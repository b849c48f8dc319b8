"""``schedule.cron``: what check-config, ``run``, ``status`` and a reload make of every
expression.  Each one either is a configuration error with a one-line fix, or becomes a
trigger that fires, on crontab(5)'s terms; none crashes anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btrsendd.config import parse_config
from btrsendd.cron import cron_trigger, parse, weekday_names
from btrsendd.errors import ConfigError
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.support.daemons import Daemon
from tests.support.world import BTRSENDD, make_world

FILE = Path("/etc/btrsendd/test.toml")

#: The expressions seen crashing ``run`` and ``status`` (or never firing) on main, with the
#: fix each error line must carry.
REFUSED = [
    pytest.param(
        "*/0 * * * *",
        "bad step '0' in the minute field of '*/0 * * * *'; a step is a whole number from 1, "
        'e.g. "*/15"',
        id="step-zero",
    ),
    pytest.param(
        "0 0 * * 5-2",
        "'5-2' in the day-of-week field of '0 0 * * 5-2' runs backwards; ranges go from low "
        'to high: write it as two, "5-6,0-2"',
        id="weekdays-backwards",
    ),
    pytest.param(
        "0 0 31-1 * *",
        "'31-1' in the day-of-month field of '0 0 31-1 * *' runs backwards; ranges go from "
        'low to high: write it as two, "31,1"',
        id="days-backwards",
    ),
    pytest.param(
        "0 0 30 2 *",
        "'0 0 30 2 *' never fires: none of its months has any of its days of the month; "
        'choose days every chosen month has (1-28 exist in all), e.g. "0 0 28 2 *"',
        id="never-fires",
    ),
]


def config_text(tmp_path: Path, cron: str) -> str:
    """A configuration whose only peculiarity is ``cron``; nothing in it needs btrfs."""
    return textwrap.dedent(f"""\
        state_dir = "{tmp_path / "state"}"
        [schedule]
        cron = "{cron}"
        [encryption]
        mode = "none"
        [storage]
        backend = "local"
        path = "{tmp_path / "archive"}"
        [[sources]]
        name = "data"
        path = "{tmp_path / "data"}"
        snapshot_dir = "{tmp_path / "snapshots"}"
        """)


def write_config(tmp_path: Path, cron: str) -> Path:
    path = tmp_path / "btrsendd.toml"
    path.write_text(config_text(tmp_path, cron))
    path.chmod(0o600)
    return path


def btrsendd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BTRSENDD, "--config", str(config), "--log-format", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def refusal(tmp_path: Path, cron: str) -> str:
    """The one thing wrong with ``cron``: from loading the file, or from its trigger."""
    try:
        config = parse_config(config_text(tmp_path, cron), FILE)
        cron_trigger(config.schedule.cron)
    except ConfigError as exc:
        return str(exc).removeprefix(f"{FILE}: schedule.cron: ")
    raise AssertionError(f"{cron!r} was accepted")


@pytest.mark.parametrize(("cron", "message"), REFUSED)
def test_refused_with_a_one_line_fix(tmp_path: Path, cron: str, message: str) -> None:
    assert refusal(tmp_path, cron) == message


@pytest.mark.parametrize(("cron", "message"), REFUSED)
@pytest.mark.parametrize("command", ["check-config", "run", "status"])
def test_commands_refuse_with_one_line(
    tmp_path: Path, cron: str, message: str, command: str
) -> None:
    proc = btrsendd(write_config(tmp_path, cron), command)

    assert proc.returncode == 2, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if "schedule.cron" in line]
    assert line.endswith(f"schedule.cron: {message}"), line
    if command != "check-config":  # check-config lists every finding, one per line
        errors = [line for line in proc.stderr.splitlines() if line.startswith("btrsendd: ")]
        assert errors == [line], proc.stderr


def test_check_config_accepts_a_sound_schedule(tmp_path: Path) -> None:
    proc = btrsendd(write_config(tmp_path, "30 2 * * 1-5"), "check-config")

    assert "schedule.cron" not in proc.stderr


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("0 22-2 * * *", 'write it as two, "22-23,0-2"'),
        ("0 0 * * sat-sun", 'write it as two, "6,0"'),
        ("0 0 1-2-3 * *", "is not a range"),
        ("0 0 * * */x", "bad step 'x'"),
        ("60 * * * *", "'60' in the minute field of '60 * * * *' is not in 0-59"),
        ("0 0 * foo *", "'foo' in the month field"),
    ],
)
def test_more_refusals(tmp_path: Path, cron: str, message: str) -> None:
    assert message in refusal(tmp_path, cron)


def test_a_cron_that_is_not_a_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.cron: Input should be a valid string"):
        parse_config(
            config_text(Path("/x"), "0 0 * * *").replace('cron = "0 0 * * *"', "cron = 5"), FILE
        )


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        # crontab numbers with steps and names the way crontab(5) reads them: APScheduler's
        # own syntax drops the step of a month-name range and refuses steps past the range.
        ("0 0 1 jan-jun/2 *", datetime(2026, 1, 2), datetime(2026, 3, 1)),
        ("*/60 * * * *", datetime(2026, 1, 1, 0, 1), datetime(2026, 1, 1, 1, 0)),
        ("0 0-0/1 * * *", datetime(2026, 1, 1, 0, 1), datetime(2026, 1, 2, 0, 0)),
        ("0 0 29 2 *", datetime(2026, 1, 1), datetime(2028, 2, 29)),
        # Both day fields restricted: either matching is enough (a Monday in February).
        ("0 0 30 2 mon", datetime(2026, 11, 26), datetime(2027, 2, 1)),
        ("0 0 * * 7", datetime(2026, 11, 26), datetime(2026, 11, 29)),
    ],
)
def test_the_trigger_fires_as_crontab_would(cron: str, after: datetime, expected: datetime) -> None:
    fire = cron_trigger(cron).get_next_fire_time(None, after.astimezone())

    assert fire is not None and fire.replace(tzinfo=None) == expected


# -- every expression --------------------------------------------------------------------------


def _field(low: int, high: int, names: list[str]) -> st.SearchStrategy[str]:
    """One field's text: mostly within the field's range, sometimes not, now and then a
    name, a zero or wild step, or a range that runs backwards."""
    valid = st.integers(min_value=low, max_value=high)
    number = st.one_of(*[valid] * 8, st.integers(min_value=0, max_value=70)).map(str)
    bound = st.one_of(*[number] * 3, st.sampled_from([*names, "foo"])) if names else number
    pair = st.tuples(number, number).map(lambda p: sorted(p, key=int))
    step = st.one_of(st.integers(min_value=1, max_value=70), st.sampled_from([0, "x"])).map(str)
    item = st.one_of(
        st.just("*"),
        st.just("*"),
        number,
        st.builds("*/{}".format, step),
        bound,
        pair.map("-".join),
        st.builds("{}-{}".format, bound, bound),
        st.builds("{}-{}/{}".format, bound, bound, step),
        st.builds(lambda p, s: f"{p[0]}-{p[1]}/{s}", pair, step),
        st.builds("{}/{}".format, bound, step),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


_expression = st.tuples(
    _field(0, 59, []),
    _field(0, 23, []),
    _field(1, 31, []),
    _field(1, 12, ["jan", "feb", "jun", "dec"]),
    _field(0, 7, ["sun", "mon", "sat"]),
).map(" ".join) | st.text(alphabet="0123456789*/-, ", max_size=20)


def _matches(tab_fire: datetime, cron: str) -> bool:
    tab = parse(cron)
    weekday = (tab_fire.weekday() + 1) % 7  # crontab: Sunday is 0
    day_ok = tab_fire.day in tab.days
    weekday_ok = weekday in tab.weekdays
    if tab.days_restricted and tab.weekdays_restricted:
        days = day_ok or weekday_ok
    else:
        days = day_ok and weekday_ok
    return (
        tab_fire.minute in tab.minutes
        and tab_fire.hour in tab.hours
        and tab_fire.month in tab.months
        and days
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expression)
def test_every_expression_is_an_error_or_a_trigger_that_fires(cron: str) -> None:
    try:
        config = parse_config(config_text(Path("/x"), cron), FILE)
    except ConfigError as exc:
        assert "schedule.cron: " in str(exc)
        return
    try:
        trigger = cron_trigger(config.schedule.cron)
    except ConfigError as exc:
        assert "never fires" in str(exc) or "cannot be scheduled" in str(exc)
        return
    now = datetime.now().astimezone()
    fire = trigger.get_next_fire_time(None, now)
    assert fire is not None and fire >= now.replace(microsecond=0)
    assert _matches(fire, cron), (cron, fire)


def _sound_field(low: int, high: int) -> st.SearchStrategy[str]:
    """A field crontab(5) accepts: numbers, ordered ranges, steps from 1."""
    number = st.integers(min_value=low, max_value=high)
    pair = st.tuples(number, number).map(sorted)
    item = st.one_of(
        st.just("*"),
        number.map(str),
        pair.map(lambda p: f"{p[0]}-{p[1]}"),
        st.builds(lambda p, s: f"{p[0]}-{p[1]}/{s}", pair, st.integers(1, 70)),
        st.builds(lambda s: f"*/{s}", st.integers(1, 70)),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


_sound = st.tuples(
    _sound_field(0, 59),
    _sound_field(0, 23),
    _sound_field(1, 31),
    _sound_field(1, 12),
    _sound_field(0, 7),
).map(" ".join)

_MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sound)
def test_a_sound_expression_fires_unless_no_date_matches(cron: str) -> None:
    tab = parse(cron)
    try:
        trigger = cron_trigger(cron)
    except ConfigError as exc:
        assert "never fires" in str(exc)
        # Refused only when no month it allows has any of its days (February has a 29th).
        assert tab.days_restricted and not tab.weekdays_restricted
        assert all(min(tab.days) > _MONTH_DAYS[month - 1] for month in tab.months)
        return
    now = datetime.now().astimezone()
    fire = trigger.get_next_fire_time(None, now)
    assert fire is not None and _matches(fire, cron), (cron, fire)


def test_commands_that_need_no_schedule_do_not_import_apscheduler(tmp_path: Path) -> None:
    config = write_config(tmp_path, "0 0 * * *")
    script = (
        "import sys\nfrom btrsendd.cli import main\n"
        f"status = main(['--config', {str(config)!r}, 'list'])\n"
        "assert status == 0, status\n"
        "print(sorted(m for m in sys.modules if m.startswith('apscheduler')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )

    assert proc.stdout.splitlines()[-1] == "[]"


def test_a_reload_to_a_schedule_that_never_fires_keeps_the_old_one(
    make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    world = make_world(
        make_btrfs("src"), work, gpg_key, f'backend = "local"\npath = "{work / "archive"}"'
    )
    daemon = Daemon(world)
    try:
        good = world.config.read_text()
        world.config.write_text(good.replace("[schedule]", '[schedule]\ncron = "0 0 30 2 *"'))
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_for("config.reload_failed")
        assert "schedule.cron: '0 0 30 2 *' never fires" in failed["error"]
        assert daemon.proc.poll() is None

        world.config.write_text(good.replace("[schedule]", '[schedule]\ncron = "5 4 * * *"'))
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_for("config.reloaded")["cron"] == "5 4 * * *"
        assert daemon.stop() == 0
    finally:
        daemon.kill()


# -- crontab's meaning, as APScheduler runs it ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("0-2", "sun,mon,tue"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("mon-wed/2", "mon,wed"),
        ("5/1", "sun,fri,sat"),
    ],
)
def test_crontab_weekdays_become_apscheduler_names(field: str, names: str) -> None:
    # crontab: 0 and 7 are Sunday; APScheduler 3: 0 is Monday and 7 is an error.
    assert weekday_names(field) == names


def test_cron_follows_crontab_semantics() -> None:
    after = datetime(2026, 11, 26, 12, 0).astimezone()  # a Thursday

    def fire(expr: str) -> datetime:
        when: datetime = cron_trigger(expr).get_next_fire_time(None, after)
        return when

    assert fire("0 0 * * *").replace(tzinfo=None) == datetime(2026, 11, 27, 0, 0)
    assert fire("30 2 * * 0").replace(tzinfo=None) == datetime(2026, 11, 29, 2, 30)  # Sunday
    assert fire("0 0 * * 7").replace(tzinfo=None) == datetime(2026, 11, 29, 0, 0)
    # Both day fields restricted: either one matching is enough (crontab(5)), so the 1st of
    # December does not wait for a Monday, and Monday the 30th comes first.
    assert fire("0 0 1 * 1").replace(tzinfo=None) == datetime(2026, 11, 30, 0, 0)
    assert fire("0 0 1 * 6").replace(tzinfo=None) == datetime(2026, 11, 28, 0, 0)
    assert fire("0 0 1 12 *").replace(tzinfo=None) == datetime(2026, 12, 1, 0, 0)

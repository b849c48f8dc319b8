"""``schedule.cron``: a crontab(5) expression, parsed here and turned into the daemon's trigger.

One parser serves two masters.  ``config.py`` calls ``parse`` when the file is loaded, so a
typo is reported with the field it is in by every command, without APScheduler (importing
it costs start-up time that ``list`` or ``backup`` have no use for).  ``schedule_trigger``
builds the APScheduler trigger the daemon runs, ``status`` asks for the next run and
``check-config`` checks: the very same object, so what check-config accepts is what runs.

The parser expands every field to the set of values it means, and the trigger is built from
those sets, not from the text: APScheduler's own field syntax differs from crontab's in ways
that crash (``*/60``, ``0-0/1``, ranges that run backwards) or silently change the meaning
(it drops the step of a month-name range: ``jan-jun/2`` would fire every month).  What it
cannot know from the fields alone, whether a date ever matches (``0 0 30 2 *`` never does),
the trigger itself answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from btrsendd.errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

    from btrsendd.config import Config

#: ``BTRSENDD_TEST_CRON_SECONDS=N`` replaces ``schedule.cron`` by a trigger firing every N
#: seconds, for tests and demos that need cycles seconds apart.
TEST_CRON_ENV = "BTRSENDD_TEST_CRON_SECONDS"

_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
EXAMPLE = '"0 0 * * *"'


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    #: Names accepted for values, in value order from ``low`` (months, weekdays).
    words: tuple[str, ...] = ()

    def value(self, token: str, expr: str) -> int:
        word = token.lower()
        if word in self.words:
            return self.low + self.words.index(word)
        if not token.isdigit() or not self.low <= int(token) <= self.high:
            raise ValueError(
                f"{token!r} in the {self.name} field of {expr!r} is not in {self.low}-{self.high}"
            )
        return int(token)


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, tuple(_MONTHS)),
    # crontab counts Sunday as 0 and as 7.
    _Field("day-of-week", 0, 7, tuple(_WEEKDAYS)),
)


@dataclass(frozen=True)
class Crontab:
    """The values each field of an expression allows (weekdays 0-6, Sunday 0)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: Whether each day field was restricted (did not start with ``*``): when both are,
    #: crontab(5) fires on a day that matches *either* of them.
    days_restricted: bool
    weekdays_restricted: bool


def _expand(field: _Field, text: str, expr: str) -> frozenset[int]:
    """The values one field means: lists, ranges, steps and names, as crontab(5) reads them."""
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(
                f"bad step {step_text!r} in the {field.name} field of {expr!r}; a step is a "
                f'whole number from 1, e.g. "*/15"'
            )
        step = int(step_text) if slash else 1
        if base == "*":
            first, last = field.low, field.high
        else:
            ends = base.split("-")
            if len(ends) > 2:
                raise ValueError(
                    f"{base!r} in the {field.name} field of {expr!r} is not a range; write "
                    'a range as LOW-HIGH, e.g. "1-5"'
                )
            first = field.value(ends[0], expr)
            # "N/step" means "N-max/step", as in Vixie cron.
            last = field.value(ends[-1], expr) if len(ends) == 2 or not slash else field.high
            if first > last:
                raise ValueError(
                    f"{base!r} in the {field.name} field of {expr!r} runs backwards; ranges go "
                    f'from low to high: write it as two, "{_split(field, first, last)}"'
                )
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _split(field: _Field, first: int, last: int) -> str:
    """A backwards range ``first-last`` as the list crontab(5) accepts, e.g. ``22-23,0-2``."""
    # Sunday is both 0 and 7: a day-of-week range wraps after Saturday.
    top = 6 if field.words == tuple(_WEEKDAYS) else field.high
    pieces = [(first, top), (field.low, last)] if first <= top else [(field.low, last)]
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in pieces)


def parse(expr: str) -> Crontab:
    """Parse a five-field crontab expression; ``ValueError`` names the field and the fix."""
    texts = expr.split()
    if len(texts) != 5:
        raise ValueError(
            f"{expr!r} has {len(texts)} fields; a cron expression has five: "
            f"minute hour day-of-month month day-of-week, e.g. {EXAMPLE}"
        )
    minutes, hours, days, months, weekdays = (
        _expand(field, text, expr) for field, text in zip(_FIELDS, texts, strict=True)
    )
    return Crontab(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(d % 7 for d in weekdays),
        days_restricted=not texts[2].startswith("*"),
        weekdays_restricted=not texts[4].startswith("*"),
    )


def weekday_names(field: str) -> str:
    """A crontab day-of-week field as APScheduler weekday names, Sunday first.

    crontab counts 0 (and 7) as Sunday; APScheduler 3 counts 0 as Monday and rejects 7:
    names mean the same to both.
    """
    days = _expand(_FIELDS[4], field, field)
    return ",".join(_WEEKDAYS[d] for d in sorted({d % 7 for d in days}))


def _listed(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def cron_trigger(expr: str) -> BaseTrigger:
    """The APScheduler trigger for ``expr``, in local time; ``ConfigError`` if it cannot run.

    Refused: an expression that does not parse, and one that never fires (no month it allows
    has any of its days).  Anything APScheduler itself rejects is refused too, as a
    configuration error: no expression ever crashes the daemon or ``status``.
    """
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger
    from tzlocal import get_localzone

    try:
        tab = parse(expr)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tz = get_localzone()
    weekdays = ",".join(_WEEKDAYS[d] for d in sorted(tab.weekdays))

    def make(day: str, weekday: str) -> CronTrigger:
        return CronTrigger(
            minute=_listed(tab.minutes),
            hour=_listed(tab.hours),
            day=day,
            month=_listed(tab.months),
            day_of_week=weekday,
            timezone=tz,
        )

    try:
        if tab.days_restricted and tab.weekdays_restricted:
            # crontab(5): either day field matching is enough; APScheduler needs all fields.
            trigger: BaseTrigger = OrTrigger([make(_listed(tab.days), "*"), make("*", weekdays)])
        else:
            # "*/2" counts as unrestricted for that rule, yet still means every other day.
            trigger = make(_listed(tab.days), weekdays)
        fires = trigger.get_next_fire_time(None, datetime.now(tz))
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(
            f"{expr!r} cannot be scheduled ({exc}); write it with plain numbers, e.g. {EXAMPLE}"
        ) from None
    if fires is None:
        texts = expr.split()
        texts[2] = "28"
        raise ConfigError(
            f"{expr!r} never fires: none of its months has any of its days of the month; "
            f'choose days every chosen month has (1-28 exist in all), e.g. "{" ".join(texts)}"'
        )
    return trigger


def schedule_trigger(config: Config) -> BaseTrigger:
    """The trigger the daemon runs for ``config``: ``ConfigError`` names the file and key.

    Under ``BTRSENDD_TEST_CRON_SECONDS=N`` (checked after the expression itself) it fires
    every N seconds instead.
    """
    try:
        trigger = cron_trigger(config.schedule.cron)
    except ConfigError as exc:
        raise ConfigError(f"{config.source_file}: schedule.cron: {exc}") from None
    test_seconds = os.environ.get(TEST_CRON_ENV)
    if not test_seconds:
        return trigger
    from apscheduler.triggers.cron import CronTrigger
    from tzlocal import get_localzone

    return CronTrigger(second=f"*/{int(test_seconds)}", timezone=get_localzone())

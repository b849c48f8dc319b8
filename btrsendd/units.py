"""Sizes, rates and durations as people write and read them: ``"1GiB"``, ``"20MiB/s"``,
``"1.5 KiB"``, ``"0:06:12"``.

Apart from ``config.py`` and ``progress.py`` so that the command line can parse and print
them without loading pydantic, dataclasses or threads at start-up.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
#: Uplinks are sold in bits per second: ``"40Mbit/s"`` is 5 MB/s.
_BIT_UNITS = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*/\s*s\s*$")
#: The slowest rate limit accepted: below it one S3 part would take hours.
MIN_RATE = 1024
_RATE_EXAMPLE = 'write it like "20MiB/s", "500KiB/s" or "40Mbit/s"'


def parse_size(value: object) -> int:
    """Turn ``"1GiB"``, ``"512 MiB"``, ``"10MB"`` or a plain integer into bytes."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "1GiB" or a number of bytes')
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError('expected a size such as "1GiB" or a number of bytes')
    match = _SIZE_RE.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f'{value!r} is not a size; write it like "1GiB", "256MiB" or 1048576')
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_rate(value: object) -> int | None:
    """Turn ``"20MiB/s"``, ``"40Mbit/s"`` or a number of bytes per second into bytes per
    second; ``"unlimited"`` is None.

    ``"Mb/s"`` is refused rather than guessed: network people mean megabits by it, storage
    people megabytes, and a guess is off by eight either way.
    """
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a rate; {_RATE_EXAMPLE}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # bytes per second, as the integer a TOML file may give
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is not a rate; {_RATE_EXAMPLE}")
        rate = value
    else:
        match = _RATE_RE.match(value)
        if not match and _SIZE_RE.match(value):
            raise ValueError(f"{value!r} is a size, not a rate: write {value.strip()}/s")
        if not match:
            raise ValueError(f"{value!r} is not a rate; {_RATE_EXAMPLE}")
        number, unit = float(match.group(1)), match.group(2)
        if unit.lower() in _BIT_UNITS:
            rate = int(number * _BIT_UNITS[unit.lower()] / 8)
        elif len(unit) > 1 and unit.endswith("b") and not unit.lower().endswith("ib"):
            raise ValueError(
                f"{value!r} is ambiguous: write {match.group(1)}{unit[:-1].upper()}B/s for "
                f"bytes or {match.group(1)}{unit[:-1]}bit/s for bits per second"
            )
        elif unit.lower() in _SIZE_UNITS:
            rate = int(number * _SIZE_UNITS[unit.lower()])
        else:
            raise ValueError(f"{value!r} is not a rate; {_RATE_EXAMPLE}")
    if rate < MIN_RATE:
        raise ValueError(
            f"{value!r} is too slow: a rate limit is at least 1KiB/s (leave it out, or "
            '"unlimited", for no limit)'
        )
    return rate


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: binary units, as ``volume_size`` is written."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    """``372`` -> ``"0:06:12"``: hours always shown, so minutes never pass for hours."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"

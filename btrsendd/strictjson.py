"""Reading JSON that came from storage: exact types, bounded values, one-line errors.

Manifests and vault inventories are written by btrsendd and AWS, but read back from places
others may write to.  Python's ``json`` module accepts much that no writer of ours produces
(duplicate keys, ``NaN``, nesting deep enough to overflow the stack) and the usual
``int(doc["x"])`` accepts more (``true``, ``"12"``, ``1e3``): each of those has turned into
an internal error or a wrong value somewhere.  Here every field is read with the exact JSON
type it must have, and whatever is wrong raises ``Invalid``, whose text names the field
(``volumes[3].raw_offset``) and the problem, with the offending value quoted and shortened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from datetime import date, datetime
from typing import Any, TypeVar

T = TypeVar("T")

#: Free text (``written_by``, timestamps, archive ids) is short.
TEXT_MAX = 1024

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class Invalid(Exception):
    """What is wrong with a document: ``field`` (empty for the whole text) and ``problem``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def loads(data: bytes) -> object:
    """The JSON value in ``data`` (strict UTF-8, unique keys, no NaN), or ``Invalid``."""
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        raise Invalid("", f"not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, a duplicate key, an integer of 4,300 digits
        raise Invalid("", f"not JSON ({clip(str(exc))})") from None
    except RecursionError:
        raise Invalid("", "not JSON that btrsendd writes (nested too deeply)") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: with a duplicate, readers disagree on its value."""
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {show(key)}")
        doc[key] = value
    return doc


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(value: object) -> str:
    """A value from a document, quoted (so control characters show) and shortened."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return clip(repr(value))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def expect(field: str, value: object, kind: type[T], what: str) -> T:
    """``value`` if it is exactly of JSON type ``kind`` (no bool for int, no str for int)."""
    if type(value) is not kind:
        raise Invalid(field, f"expected {what}, got {_json_type(value)}")
    return value


#: Reads one field's value: ``check(field, value)`` returns it typed, or raises ``Invalid``.
Check = Callable[[str, object], T]


def a_list(field: str, value: object) -> list[object]:
    return expect(field, value, list, "a list")


def a_string(field: str, value: object) -> str:
    return expect(field, value, str, "a string")


def text(pattern: re.Pattern[str], what: str) -> Check[str]:
    """A string that ``pattern`` matches in full; ``what`` says what it should have been."""

    def check(field: str, value: object) -> str:
        found = a_string(field, value)
        if pattern.fullmatch(found) is None:
            raise Invalid(field, f"{show(found)} is not {what}")
        return found

    return check


def printable(field: str, value: object) -> str:
    """Short text with no control characters (nothing that could split a line)."""
    found = a_string(field, value)
    if not 0 < len(found) <= TEXT_MAX or not found.isprintable():
        raise Invalid(field, f"{show(found)} is not short printable text")
    return found


def integer(low: int, high: int) -> Check[int]:
    def check(field: str, value: object) -> int:
        number = expect(field, value, int, "an integer")
        if not low <= number <= high:
            raise Invalid(field, f"{show(number)} is out of range ({low} to {high})")
        return number

    return check


def choice(options: Collection[str]) -> Check[str]:
    def check(field: str, value: object) -> str:
        found = a_string(field, value)
        if found not in options:
            raise Invalid(field, f"{show(found)} is not one of {', '.join(sorted(options))}")
        return found

    return check


def day(field: str, value: object) -> date:
    """A calendar day written YYYY-MM-DD (``fromisoformat`` alone also takes other forms)."""
    found = text(_DATE_RE, "a date (YYYY-MM-DD)")(field, value)
    try:
        return date.fromisoformat(found)
    except ValueError:
        raise Invalid(field, f"{show(found)} is not a real day") from None


def timestamp(field: str, value: object) -> str:
    """An ISO 8601 time with its UTC offset (comparing it with others must not fail)."""
    found = printable(field, value)
    try:
        zone = datetime.fromisoformat(found).tzinfo
    except ValueError:
        raise Invalid(field, f"{show(found)} is not an ISO 8601 time") from None
    if zone is None:
        raise Invalid(field, f"{show(found)} has no UTC offset")
    return found


class Object:
    """One JSON object, read field by field; ``path`` names it in errors (``volumes[3]``)."""

    def __init__(self, value: object, path: str, what: str = "an object") -> None:
        self.doc: dict[str, object] = expect(path or "document", value, dict, what)
        self.path = path

    def field(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def req(self, name: str, check: Check[T]) -> T:
        """A field that must be present and not null."""
        if name not in self.doc:
            raise Invalid(self.field(name), "missing")
        return check(self.field(name), self.doc[name])

    def opt(self, name: str, check: Check[T], *, may_be_absent: bool = False) -> T | None:
        """A field that may be null (and, for fields added within a version, absent)."""
        if name not in self.doc and not may_be_absent:
            raise Invalid(self.field(name), "missing")
        value = self.doc.get(name)
        return None if value is None else check(self.field(name), value)

    def sub(self, name: str) -> Object:
        """A field that holds an object."""
        return Object(self.req(name, lambda _f, v: v), self.field(name))

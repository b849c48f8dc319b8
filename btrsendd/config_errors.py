"""The configuration's schema errors, worded for the person editing the TOML file.

pydantic reports a location (``("sources", 0, "path")``) and a message meant for
programmers; this module turns each into a finding on the key as it is written in the file
(``sources[0] (name = 'home').path``), answers a misspelt key or value with the one it
probably was (``did you mean "cron"?``), and points to the annotated example that explains
every key: the installed copy, since ``config/btrsendd.toml`` exists only in a clone.

Where the file has mistakes, ``intact`` says which of its top-level keys are sound all the
same, so that ``check-config`` can check those on the machine in the same run.

It knows the models only through the one it is given, so that ``config.py``, which defines
them, can use it.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from btrsendd.findings import Finding, error

#: Where the annotated example configuration is installed: by the Debian package, then by
#: ``make install`` (whose DOCDIR defaults to /usr/local).
EXAMPLE_CONFIGS = (
    Path("/usr/share/doc/btrsendd/btrsendd.toml.example"),
    Path("/usr/local/share/doc/btrsendd/btrsendd.toml.example"),
)

#: Locations pydantic adds for a validator wrapped around a type: not keys of the file.
_VALIDATOR_STEP = re.compile(r"^function-(after|before|wrap|plain)\[")


def example_config() -> Path:
    """The installed example configuration (the package's path if none is installed)."""
    return next((p for p in EXAMPLE_CONFIGS if p.is_file()), EXAMPLE_CONFIGS[0])


def schema_findings(
    err: ValidationError, data: dict[str, Any], model: type[BaseModel]
) -> list[Finding]:
    """One error per problem pydantic found validating ``data`` as ``model``."""
    found = []
    problems = err.errors()
    for problem in problems:
        if problem["type"] == "too_short" and _has_broken_entries(problem["loc"], problems):
            continue  # short only because its broken entries, reported, were left out
        loc = [item for item in problem["loc"] if not _is_validator_step(item)]
        key = _location(loc, data)
        if problem["type"] == "extra_forbidden":
            message = _unknown_key(str(loc[-1]), _table_at(model, loc[:-1]), model)
        elif problem["type"] == "missing":
            message = f"required key is missing (see {example_config()})"
        else:
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "literal_error" and isinstance(problem["input"], str):
                allowed = re.findall(r"'([^']*)'", problem.get("ctx", {}).get("expected", ""))
                guess = _did_you_mean(problem["input"], allowed)
                message += f'; did you mean "{guess}"?' if guess else ""
        found.append(error(key, message))
    return found


def intact(model: type[BaseModel], data: dict[str, Any], err: ValidationError) -> dict[str, Any]:
    """The top-level keys of ``data`` that ``err`` found nothing wrong with, each validated on
    its own (the defaults of those left out): what can still be checked on the machine."""
    # Every problem is located under the top-level key it concerns (a field validator of the
    # model's too), so each other key validates on its own just as it did in the whole.
    locations = [problem["loc"] for problem in err.errors()]
    if not all(locations):
        return {}  # a problem of the file as a whole
    broken = {loc[0] for loc in locations}
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in broken or info.exclude:
            continue
        if name in data:
            found[name] = TypeAdapter(info.rebuild_annotation()).validate_python(data[name])
        else:
            found[name] = info.get_default(call_default_factory=True)
    return found


def _has_broken_entries(loc: tuple[int | str, ...], problems: Sequence[Any]) -> bool:
    return any(p["loc"][: len(loc)] == loc and len(p["loc"]) > len(loc) for p in problems)


def _is_validator_step(item: int | str) -> bool:
    return isinstance(item, str) and _VALIDATOR_STEP.match(item) is not None


def _location(loc: Sequence[int | str], data: dict[str, Any]) -> str:
    """A pydantic location as the TOML key a user would write; a source is named too."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            listed = isinstance(node, list | tuple) and item < len(node)
            entry = node[item] if listed else None
            name = entry.get("name") if isinstance(entry, dict) else None
            parts[-1] = f"{parts[-1]}[{item}]" + (f" (name = {name!r})" if name else "")
            node = entry
            continue
        parts.append(item)
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) if parts else "(top level)"


def _unknown_key(key: str, table: type[BaseModel] | None, model: type[BaseModel]) -> str:
    """Why ``key`` is refused, and what was probably meant."""
    see = f"every key is explained in {example_config()}"
    known = [] if table is None else _keys(table)
    guess = _did_you_mean(key, known)
    if guess:
        return f'unknown key; did you mean "{guess}"? ({see})'
    home = [name for name, section in _sections(model).items() if key in _keys(section)]
    if home:
        # Written above its table's header, or under another one.
        return f"unknown key here; {key} belongs in [{home[0]}] ({see})"
    listed = f"; the keys here are {', '.join(known)}" if known else ""
    return f"unknown key{listed} ({see})"


def _did_you_mean(wrong: str, known: Sequence[str]) -> str | None:
    """The known word ``wrong`` was probably meant to be, if one is close enough."""
    close = difflib.get_close_matches(wrong, known, n=1)
    if not close:
        # Case is the commonest slip in values ("deep_archive"), and too far for difflib.
        close = [k for k in known if k.lower() == wrong.lower()]
    return close[0] if close else None


def _keys(table: type[BaseModel]) -> list[str]:
    """The keys a table may hold (``source_file`` and the like are not TOML keys)."""
    return [name for name, info in table.model_fields.items() if not info.exclude]


def _sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """``model``'s tables, by name (``sources`` for its ``[[sources]]`` entries)."""
    found = {}
    for name, info in model.model_fields.items():
        table = _model_in(info.annotation)
        if table is not None:
            found[name] = table
    return found


def _table_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model of the TOML table at ``loc`` (list indexes and dict keys walked through)."""
    node: Any = model
    for item in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            info = node.model_fields.get(str(item))
            if info is None:
                return None
            node = info.annotation
        else:  # a list entry or a table of tables: one step into what it holds
            node = _element(node)
        node = _unwrapped(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _element(annotation: Any) -> Any:
    """What a list, tuple or dict annotation holds: its last argument (a dict's value)."""
    args = [a for a in get_args(annotation) if a is not Ellipsis]
    return args[-1] if args else None


def _unwrapped(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrapped(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _unwrapped(rest[0])
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or as the entries of a list (``[[sources]]``)."""
    node = _unwrapped(annotation)
    if get_origin(node) in (tuple, list):
        node = _unwrapped(_element(node))
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None

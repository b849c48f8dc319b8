"""The configuration file as plain data: its sections and keys from the pydantic schema
(``btrsendd.config.Config``), what each means from the annotated example.

The schema decides which keys exist, their types, allowed values, ranges and defaults: what
the program accepts.  The words come from ``config/btrsendd.toml`` (``example_prose``), the one
place they are written, so the example and the man page say the same thing.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from btrsendd.config import Config
from btrsendd.docgen.example_prose import Prose, read_example


@dataclass(frozen=True)
class Key:
    section: str  # "" for the top level
    name: str
    kind: str  # its type and allowed values, in words
    required: bool
    default: str | None  # as TOML; None when unset by default (or required)
    paragraphs: tuple[str, ...]  # from the example
    examples: tuple[str, ...]  # the example's line(s) for a key it leaves unset
    subkeys: tuple[str, ...]  # keys of the tables it holds (restore.prices: per_gb, ...)

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name


@dataclass(frozen=True)
class Section:
    name: str  # "" for the top level
    array: bool  # [[sources]]: a table that may be given several times
    intro: tuple[str, ...]
    keys: tuple[Key, ...]

    @property
    def header(self) -> str:
        if not self.name:
            return ""
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"


@dataclass(frozen=True)
class ConfigDoc:
    preamble: tuple[str, ...]
    sections: tuple[Section, ...]
    unattached: tuple[str, ...]  # example comments no key or section claims

    def keys(self) -> Iterator[Key]:
        for section in self.sections:
            yield from section.keys


# -- types in words ------------------------------------------------------------------------

_UNITS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def human_size(value: int) -> str:
    """``1073741824`` as the example writes it: ``1GiB`` (exact units only)."""
    for unit, size in _UNITS:
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


@dataclass(frozen=True)
class Written:
    """An integer the file gives as a string with a unit (``"1GiB"``, ``"20MiB/s"``)."""

    words: str
    suffix: str  # after the unit: "/s" for a rate
    probes: tuple[str, ...]  # values its parser accepts (one may be out of a key's range)


#: Told apart by what the key accepts, not by how its type is spelt in the code.
WRITTEN = (
    Written('size (bytes, or a string such as "1GiB")', "", ("1GiB", "1MiB", "1TiB")),
    Written('rate (bytes per second, or a string such as "20MiB/s")', "/s", ("20MiB/s", "1GiB/s")),
)


def _accepts(field: FieldInfo, value: object) -> bool:
    try:
        # The key's own type and constraints, validated as the file's value would be.
        key_type: Any = Annotated[field.annotation, field]
        TypeAdapter(key_type).validate_python(value)
    except ValidationError:
        return False
    return True


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """The type inside ``X | None`` and ``Annotated[X, ...]``, the metadata gathered on the
    way (a ``Field`` nested in ``Annotated`` adds its own), and whether None was allowed."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, metadata, optional
            annotation = args[0]
        elif origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata = [*metadata, *(item.metadata if isinstance(item, FieldInfo) else [item])]
        else:
            return annotation, metadata, optional


def written_as(field: FieldInfo) -> Written | None:
    base, _, _ = _unwrap(field.annotation, [])
    if base is not int:
        return None
    return next((w for w in WRITTEN if any(_accepts(field, p) for p in w.probes)), None)


def _range(metadata: list[Any], written: Written | None = None) -> str:
    def show(bound: object) -> str:
        if written is not None and isinstance(bound, int):
            return human_size(bound) + written.suffix
        return str(bound)

    low = next((show(m.ge) for m in metadata if isinstance(m, Ge)), None)
    above = next((show(m.gt) for m in metadata if isinstance(m, Gt)), None)
    high = next((show(m.le) for m in metadata if isinstance(m, Le)), None)
    below = next((show(m.lt) for m in metadata if isinstance(m, Lt)), None)
    if low is not None and high is not None:
        return f", {low} to {high}"
    parts = [
        *([f"at least {low}"] if low is not None else []),
        *([f"more than {above}"] if above is not None else []),
        *([f"at most {high}"] if high is not None else []),
        *([f"less than {below}"] if below is not None else []),
    ]
    return ", " + " and ".join(parts) if parts else ""


def _plural(text: str) -> str:
    return {"string": "strings", "integer": "integers", "number": "numbers"}.get(text, text)


def field_kind(field: FieldInfo) -> str:
    """The type of a key, in the words a man page uses."""
    base, metadata, _ = _unwrap(field.annotation, list(field.metadata))
    written = written_as(field)
    if written is not None:
        return written.words + _range(metadata, written)
    if base is Path:
        return "path" if _accepts(field, "relative/path") else "absolute path"
    return kind_of(field.annotation, list(field.metadata))


def kind_of(annotation: Any, metadata: list[Any]) -> str:
    """The type of a value (a key's, or one inside a key's table), in words."""
    annotation, metadata, _ = _unwrap(annotation, metadata)
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(to_toml(v) for v in get_args(annotation))
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer" + _range(metadata)
    if annotation is float:
        return "number" + _range(metadata)
    if annotation is str:
        return "string"
    if annotation is Path:
        return "path"
    if origin in (tuple, list):
        inner = kind_of(get_args(annotation)[0], [])
        least = next((m.min_length for m in metadata if isinstance(m, MinLen)), 0)
        return f"list of {_plural(inner)}" + (f", at least {least}" if least else "")
    if origin is dict:
        key, value = get_args(annotation)
        names = get_args(key) if get_origin(key) is Literal else ()
        keys = ", ".join(names) if names else kind_of(key, []) + "s"
        return f"table with keys {keys} (values: {kind_of(value, [])})"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = (f"{n} ({field_kind(f)})" for n, f in _fields(annotation))
        return "table with keys " + ", ".join(fields)
    return "value"


def to_toml(value: object, written: Written | None = None) -> str:
    """A default as it would be written in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        human = human_size(value)
        return json.dumps(human + written.suffix) if written and human != str(value) else str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {to_toml(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return str(value)


def _subkeys(annotation: Any) -> tuple[str, ...]:
    """Keys of the tables a key holds at some depth (``prices.<CLASS>.<Tier>.per_gb``)."""
    annotation, _, _ = _unwrap(annotation, [])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return tuple(annotation.model_fields)
    if get_origin(annotation) in (dict, tuple, list):
        return tuple(name for arg in get_args(annotation) for name in _subkeys(arg))
    return ()


# -- the schema ----------------------------------------------------------------------------


def _table(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model of a section field, and whether it is an array of tables."""
    annotation, _, _ = _unwrap(annotation, [])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = get_args(annotation)
    if get_origin(annotation) in (tuple, list) and args:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, True
    return None, False


def _default(field: FieldInfo) -> str | None:
    if field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    if value is None or value is PydanticUndefined:
        return None
    return to_toml(value, written_as(field))


def _fields(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in model.model_fields.items():
        if not field.exclude:  # not a key of the file (Config.source_file)
            yield name, field


def schema_sections(
    model: type[BaseModel] = Config, prefix: str = ""
) -> list[tuple[str, bool, type[BaseModel]]]:
    """Every table of the file, the top level first: (name, is an array, model)."""
    found: list[tuple[str, bool, type[BaseModel]]] = [(prefix, False, model)]
    for name, field in _fields(model):
        table, array = _table(field.annotation)
        if table is not None:
            nested = schema_sections(table, f"{prefix}.{name}" if prefix else name)
            found += [(nested[0][0], array, table), *nested[1:]]
    return found


def schema_keys() -> dict[str, list[str]]:
    """Each section's key names (what ``example_prose`` needs to tell keys from prose)."""
    return {
        name: [k for k, f in _fields(model) if _table(f.annotation)[0] is None]
        for name, _, model in schema_sections()
    }


def read_config_doc(example: str) -> ConfigDoc:
    """The configuration's documentation: the schema's keys with ``example``'s prose."""
    prose: Prose = read_example(example, schema_keys())
    sections = []
    for name, array, model in schema_sections():
        keys = []
        for key, field in _fields(model):
            if _table(field.annotation)[0] is not None:
                continue
            said = prose.keys.get((name, key))
            keys.append(
                Key(
                    section=name,
                    name=key,
                    kind=field_kind(field),
                    required=field.is_required(),
                    default=_default(field),
                    paragraphs=tuple(said.paragraphs) if said else (),
                    examples=tuple(said.examples) if said and said.commented else (),
                    subkeys=_subkeys(field.annotation),
                )
            )
        intro = tuple(prose.intros.get(name, ()))
        sections.append(Section(name, array, intro, tuple(keys)))
    return ConfigDoc(tuple(prose.preamble), tuple(sections), tuple(prose.unattached))

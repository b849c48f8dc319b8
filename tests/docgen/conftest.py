"""The generated man pages and completions, made once per session the way `make install` makes
them (``python -m btrsendd.docgen``), and what the tests compare them with: the parser and the
schema, walked here without the generator's help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from btrsendd.cli import build_parser
from btrsendd.config import Config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "btrsendd.toml"


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docgen")
    subprocess.run(
        [sys.executable, "-m", "btrsendd.docgen", "--example", str(EXAMPLE), "--out", str(out),
         "--date", "2026-11-30"],
        check=True,
    )  # fmt: skip
    return out


def commands(
    parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the command line with its command path, ``()`` for btrsendd itself."""
    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """The flags of each visible option."""
    return [
        tuple(a.option_strings)
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS
    ]


def config_keys(model: type[BaseModel] = Config, section: str = "") -> Iterator[tuple[str, str]]:
    """(section, key) of every key a configuration file can set."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        inner = field.annotation
        args = getattr(inner, "__args__", ())
        table = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
        if table is None and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            table = args[0]  # tuple[SourceConfig, ...]: [[sources]]
        if table is not None:
            yield from config_keys(table, f"{section}.{name}" if section else name)
        else:
            yield section, name

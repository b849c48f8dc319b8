"""The command line as plain data, read from the argparse parser the program itself uses.

The man page and both completions are written from this one model, so what they offer is what
``btrsendd`` accepts: a command or an option added to the parser appears in all of them at the
next build.  Beyond argparse's public interface this reads what every version since 3.2 has:
a parser's ``_actions``, a subparsers action's ``_choices_actions`` (the commands' help) and
the help formatter's ``_expand_help`` (``%(default)s``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: What an option's value is, as far as a completion can help with it.
ValueKind = Literal["none", "choice", "file", "directory", "source", "text"]


@dataclass(frozen=True)
class Option:
    """An option (``--source NAME``) or a positional argument (no flags)."""

    flags: tuple[str, ...]
    help: str
    metavar: str | None  # None: a flag that takes no value
    choices: tuple[str, ...]
    kind: ValueKind
    required: bool
    repeatable: bool  # -v -v, or an option given more than once

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    @property
    def is_help(self) -> bool:
        return "--help" in self.flags

    def usage(self) -> str:
        """``--source NAME`` as a synopsis writes it: bracketed unless required."""
        first = next(
            (f for f in self.flags if f.startswith("--")), self.flags[0] if self.flags else ""
        )
        text = " ".join(part for part in (first, self.metavar) if part)
        return text if self.required else f"[{text}]"


@dataclass(frozen=True)
class Command:
    """``btrsendd`` itself (``path == ()``), a command, or a command's action (``catalog
    rebuild``)."""

    path: tuple[str, ...]
    help: str
    description: str
    epilog: str
    options: tuple[Option, ...]
    positionals: tuple[Option, ...]
    subcommands: tuple[Command, ...]

    @property
    def name(self) -> str:
        return " ".join(("btrsendd", *self.path))

    def walk(self) -> Iterator[Command]:
        """This command and every command below it, in ``--help`` order."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()

    def own_options(self, inherited: tuple[Option, ...]) -> tuple[Option, ...]:
        """The options but ``--help`` and those an enclosing parser already offers (global
        options a command also accepts after its name are documented once, as global)."""
        seen = {option.flags for option in inherited}
        return tuple(o for o in self.options if not o.is_help and o.flags not in seen)


def _kind(action: argparse.Action) -> ValueKind:
    if action.nargs == 0:
        return "none"
    if action.choices is not None:
        return "choice"
    if action.dest == "source":
        return "source"
    if action.metavar == "DIR":
        return "directory"
    if action.type is Path or action.metavar in ("PATH", "FILE"):
        return "file"
    return "text"


def _metavar(action: argparse.Action) -> str | None:
    if action.nargs == 0:
        return None
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text with argparse's ``%(default)s`` and the like filled in."""
    if not action.help:
        return ""
    return parser._get_formatter()._expand_help(action)


def _option(parser: argparse.ArgumentParser, action: argparse.Action) -> Option:
    return Option(
        flags=tuple(action.option_strings),
        help=_help(parser, action),
        metavar=_metavar(action),
        choices=tuple(str(c) for c in action.choices) if action.choices is not None else (),
        kind=_kind(action),
        required=bool(action.required),
        repeatable=isinstance(action, argparse._CountAction | argparse._AppendAction),
    )


def _subcommands(
    action: argparse._SubParsersAction[argparse.ArgumentParser], path: tuple[str, ...]
) -> list[Command]:
    """The commands of a subparsers action, in order, once each (not again under an alias),
    but those hidden with ``help=SUPPRESS``."""
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    seen: set[int] = set()
    found = []
    for name, parser in action.choices.items():
        if id(parser) in seen or helps.get(name) == argparse.SUPPRESS:
            continue
        seen.add(id(parser))
        found.append(_command(parser, (*path, name), helps.get(name) or ""))
    return found


def _command(parser: argparse.ArgumentParser, path: tuple[str, ...], help: str) -> Command:
    options: list[Option] = []
    positionals: list[Option] = []
    subcommands: list[Command] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            subcommands += _subcommands(action, path)
        elif action.option_strings:
            options.append(_option(parser, action))
        else:
            positionals.append(_option(parser, action))
    return Command(
        path=path,
        help=help,
        description=parser.description or help,
        epilog=parser.epilog or "",
        options=tuple(options),
        positionals=tuple(positionals),
        subcommands=tuple(subcommands),
    )


def read_parser(parser: argparse.ArgumentParser) -> Command:
    """The model of ``parser`` (``btrsendd.cli.build_parser()``) and everything below it."""
    return _command(parser, (), parser.description or "")

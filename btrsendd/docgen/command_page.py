"""``btrsendd(8)``: the command line, from the parser's own descriptions and help texts."""

from __future__ import annotations

from btrsendd.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config
from btrsendd.docgen import roff
from btrsendd.docgen.cli_model import Command, Option


def _synopsis(command: Command, globals_: tuple[Option, ...]) -> list[str]:
    """The command's usage, wrapped with a hanging indent (``.SY``)."""
    words = [roff.bold(word) for word in command.path]
    options = [roff.escape(o.usage()) for o in command.own_options(globals_)]
    positionals = [roff.italic(o.usage()) for o in command.positionals]
    return [
        ".SY btrsendd",
        " ".join(["[\\fIGLOBAL OPTIONS\\fR]", *words, *options, *positionals]),
        ".YS",
    ]


def _option(option: Option) -> list[str]:
    flags = ", ".join(roff.bold(flag) for flag in option.flags) or roff.italic(option.metavar or "")
    tag = flags + (f" {roff.italic(option.metavar)}" if option.flags and option.metavar else "")
    lines = [".TP", tag, roff.prose(option.help)]
    if option.choices and option.metavar and not option.metavar.startswith("{"):
        lines.append(roff.prose("One of: " + ", ".join(option.choices) + "."))
    return lines


def _where_globals_go(root: Command, globals_: tuple[Option, ...]) -> str:
    """Before the command, and which of them every command also takes after its name."""
    leaves = [c for c in root.walk() if c.path and not c.subcommands]
    after = [
        option
        for option in globals_
        if leaves and all(option.flags in {o.flags for o in leaf.options} for leaf in leaves)
    ]
    if after and len(after) == len(globals_):
        return "These options are given before or after the command."
    if after:
        names = [next((f for f in o.flags if f.startswith("--")), o.flags[0]) for o in after]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        return f"These options are given before the command; {listed} also after it."
    return "These options are given before the command."


def _name_line(description: str) -> str:
    first = description.split(". ")[0].rstrip(".")
    return f"btrsendd \\- {roff.escape(first[:1].lower() + first[1:])}"


def command_page(root: Command, version: str, date: str, example_path: str) -> str:
    """The roff source of ``btrsendd(8)``."""
    globals_ = tuple(o for o in root.options if not o.is_help)
    commands = [c for c in root.walk() if c.path]
    leaves = [c for c in commands if not c.subcommands]
    lines = roff.header("BTRSENDD", 8, date, f"btrsendd {version}", "System Administration")
    lines += [".SH NAME", _name_line(root.description), ".SH SYNOPSIS"]
    for command in leaves:
        lines += _synopsis(command, globals_)
    lines += [".SH DESCRIPTION", roff.prose(root.description)]
    lines += [
        roff.prose(
            "Each command reads the configuration file (see btrsendd.toml(5)); "
            "`btrsendd COMMAND --help` prints a command's options."
        ),
        ".SH GLOBAL OPTIONS",
        roff.prose(_where_globals_go(root, globals_)),
    ]
    for option in root.options:
        lines += _option(option)
    lines.append(".SH COMMANDS")
    for command in commands:
        lines += [".SS " + roff.quoted_arg(" ".join(command.path)), roff.prose(command.description)]
        if command.subcommands:
            actions = ", ".join(f"`{' '.join(sub.path)}`" for sub in command.subcommands)
            lines += [".PP", roff.prose(f"Its actions: {actions}.")]
        else:
            lines += [*_synopsis(command, globals_), ".PP"]
        for option in (*command.positionals, *command.own_options(globals_)):
            lines += _option(option)
    if root.epilog:
        lines += [".SH EXIT STATUS", roff.prose(root.epilog)]
    state_dir = Config.model_fields["state_dir"].default
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        roff.bold(CONFIG_ENV),
        roff.prose(
            f"The configuration file when --config is not given (default {DEFAULT_CONFIG_PATH})."
        ),
        ".TP",
        roff.bold("BTRSENDD_DEBUG"),
        roff.prose("Set to 1 to print the traceback of an internal error."),
        ".SH FILES",
        ".TP",
        roff.italic(str(DEFAULT_CONFIG_PATH)),
        roff.prose("The configuration (root's, mode 0600); see btrsendd.toml(5)."),
        ".TP",
        roff.italic(example_path),
        roff.prose("The annotated example configuration."),
        ".TP",
        roff.italic(str(state_dir)),
        roff.prose(
            "The default state_dir: the catalog (catalog.db), locks and the daemon's published "
            "state (daemon.json)."
        ),
        ".SH SEE ALSO",
        roff.prose("btrsendd.toml(5), systemctl(1), journalctl(1), btrfs(8), gpg(1)"),
    ]
    return "\n".join(lines) + "\n"

"""``btrsendd.toml(5)``: every key of the schema, with the example configuration's words."""

from __future__ import annotations

from btrsendd.config import CONFIG_ENV, DEFAULT_CONFIG_PATH
from btrsendd.docgen import roff
from btrsendd.docgen.config_model import ConfigDoc, Key, Section


def _key(key: Key) -> list[str]:
    kind = key.kind + ("; required" if key.required else "")
    lines = [".TP", roff.bold(key.name), roff.italic(kind), ".br"]
    lines += roff.paragraphs(key.paragraphs, first="", rest=".IP")
    if key.examples:
        lines += [".IP", "Example:", *roff.literal(key.examples)]
    return lines


def _section(section: Section) -> list[str]:
    title = section.header or "Top level"
    lines = [".SS " + roff.quoted_arg(title)]
    lines += roff.paragraphs(section.intro)
    for key in section.keys:
        lines += _key(key)
    return lines


def config_page(doc: ConfigDoc, version: str, date: str, example_path: str) -> str:
    """The roff source of ``btrsendd.toml(5)``."""
    lines = roff.header("BTRSENDD.TOML", 5, date, f"btrsendd {version}", "File Formats")
    lines += [
        ".SH NAME",
        "btrsendd.toml \\- configuration file of btrsendd(8)",
        ".SH SYNOPSIS",
        roff.italic(str(DEFAULT_CONFIG_PATH)),
        ".SH DESCRIPTION",
        roff.prose(
            f"btrsendd(8) reads its configuration from {DEFAULT_CONFIG_PATH}, or from the file "
            f"that --config or ${CONFIG_ENV} names: a TOML file of the tables and keys below. "
            f"An annotated example is installed as {example_path}."
        ),
    ]
    # The preamble's first paragraph is the example's title line.
    lines += roff.paragraphs(doc.preamble[1:])
    lines.append(".SH KEYS")
    for section in doc.sections:
        lines += _section(section)
    lines += [
        ".SH FILES",
        ".TP",
        roff.italic(str(DEFAULT_CONFIG_PATH)),
        roff.prose("The configuration: root's, mode 0600."),
        ".TP",
        roff.italic(example_path),
        roff.prose("The annotated example."),
        ".SH SEE ALSO",
        roff.prose("btrsendd(8), `btrsendd check-config`"),
    ]
    return "\n".join(lines) + "\n"

"""A minimal configuration and ways to vary it, for the configuration tests."""

from __future__ import annotations

from pathlib import Path

from btrsendd.config import Config, parse_config

FILE = Path("/etc/btrsendd/test.toml")


#: What every unknown key points to (no example is installed where the tests run).
EXAMPLE = "every key is explained in /usr/share/doc/btrsendd/btrsendd.toml.example"


MINIMAL = """
[encryption]
recipients = ["0123456789ABCDEF0123456789ABCDEF01234567"]

[storage]
bucket = "b"

[[sources]]
name = "home"
path = "/home"
snapshot_dir = "/home/.btrsendd"
"""


def parse(text: str) -> Config:
    return parse_config(text, FILE)


def with_section(section: str, body: str) -> str:
    """MINIMAL with ``[section]`` holding ``body``, merged into the table if MINIMAL has it."""
    header = f"[{section}]\n"
    if header in MINIMAL:
        return MINIMAL.replace(header, header + body + "\n")
    return f"{header}{body}\n{MINIMAL}"

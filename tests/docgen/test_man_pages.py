"""btrsendd(8) and btrsendd.toml(5): rendered by man as users read them, without a warning,
and listing every command, option and configuration key the program has."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from btrsendd.docgen import roff
from tests.docgen.conftest import commands, config_keys, options


def render(page: Path) -> str:
    """The page as `man -l` shows it, one paragraph per line (wide, no hyphenation); fails on
    any warning from man or groff."""
    if not shutil.which("man") or not shutil.which("groff"):
        pytest.fail("man or groff is not installed: run `make deps` (apt man-db groff-base)")
    env = {**os.environ, "MANWIDTH": "1000", "LC_ALL": "C.UTF-8", "MANPAGER": "cat"}
    shown = subprocess.run(
        ["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    strict = subprocess.run(
        ["groff", "-man", "-ww", "-z", "-K", "utf8", str(page)], capture_output=True, text=True
    )
    assert strict.returncode == 0 and strict.stderr == "", strict.stderr
    return shown.stdout


def flat(text: str) -> str:
    return " ".join(text.replace("`", "").split())


def test_every_command_and_option_is_in_the_command_page(generated: Path) -> None:
    text = render(generated / "btrsendd.8")
    lines = text.splitlines()
    [(_, root), *rest] = list(commands())
    global_flags = options(root)
    for flags in global_flags:
        assert any(line.strip().startswith(", ".join(flags)) for line in lines), flags
    for path, parser in rest:
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # `catalog`: its actions have the synopses
        synopsis = next(
            (
                line
                for line in lines
                if line.strip().startswith(f"btrsendd [GLOBAL OPTIONS] {' '.join(path)}")
            ),
            None,
        )
        assert synopsis is not None, f"no synopsis of {' '.join(path)}"
        for flags in options(parser):
            if flags in global_flags:
                continue
            assert any(flag in synopsis.split() or f"[{flag}" in synopsis for flag in flags), (
                path,
                flags,
            )
        for action in parser._actions:
            if action.help and action.help != argparse.SUPPRESS:
                assert flat(parser._get_formatter()._expand_help(action)) in flat(text), action.help
        assert flat(parser.description or "") in flat(text)


def _sections(text: str) -> dict[str, str]:
    """The rendered KEYS section, by table: "Top level", "[schedule]", "[[sources]]"..."""
    keys = text.split("\nKEYS\n", 1)[1].split("\nFILES\n", 1)[0]
    parts = re.split(r"^   (\S.*)$", keys, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_config_key_is_in_the_config_page_under_its_table(generated: Path) -> None:
    sections = _sections(render(generated / "btrsendd.toml.5"))
    for section, key in config_keys():
        title = (
            "Top level"
            if not section
            else (f"[[{section}]]" if section == "sources" else f"[{section}]")
        )
        assert title in sections, title
        assert re.search(rf"^       {re.escape(key)}\b", sections[title], re.MULTILINE), (
            section,
            key,
        )
    # Keys of the tables a key holds (restore.prices.<CLASS>.<Tier>.per_gb) are named too.
    for sub in ("per_gb", "per_1000_requests", "wait"):
        assert sub in sections["[restore]"]


def test_text_cannot_become_roff_requests() -> None:
    assert roff.prose(".TH evil") == "\\&.TH evil"
    assert roff.prose("'br") == "\\&'br"
    assert roff.prose("a\\fBb --x") == "a\\efBb \\-\\-x"
    assert roff.prose("run `btrsendd check-config` now") == (
        "run \\fBbtrsendd check\\-config\\fR now"
    )

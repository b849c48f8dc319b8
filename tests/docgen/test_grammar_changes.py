"""The generators follow the parser wherever it goes: global options accepted after the
command too, counted flags, positional arguments, hidden commands and aliases."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from btrsendd.docgen.cli_model import read_parser
from btrsendd.docgen.command_page import command_page
from btrsendd.docgen.completion import bash_completion, zsh_completion
from tests.docgen.test_completion import CONFIG, bash_complete
from tests.docgen.test_man_pages import render


def grown_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="the file")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more")
    parser = argparse.ArgumentParser(prog="btrsendd", description="Backups.", parents=[common])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    backup = commands.add_parser("backup", help="back up", aliases=["b"], parents=[common])
    backup.add_argument(
        "--rate-limit", metavar="RATE", default="off", help="(default: %(default)s)"
    )
    restore = commands.add_parser("restore", help="restore", parents=[common])
    restore.add_argument("source", help="the source")
    restore.add_argument("when", nargs="?", choices=["latest", "first"], help="which backup")
    commands.add_parser("debug-dump", help=argparse.SUPPRESS, parents=[common])
    return parser


def test_the_page_and_completions_follow_a_grown_grammar(tmp_path: Path) -> None:
    model = read_parser(grown_parser())
    assert [c.path for c in model.walk()] == [(), ("backup",), ("restore",)]
    page = tmp_path / "btrsendd.8"
    page.write_text(command_page(model, "9", "", "/example"))
    text = render(page)
    assert "These options are given before or after the command." in text
    assert "btrsendd [GLOBAL OPTIONS] restore source [{latest,first}]" in text
    assert "(default: off)" in text
    # Global options are documented once, not again under every command.
    assert text.count("--verbose") == 1

    script = tmp_path / "btrsendd.bash"
    script.write_text(bash_completion(model))
    config = tmp_path / "btrsendd.toml"
    config.write_text(CONFIG)
    assert bash_complete(script, "restore", "--config", str(config), "") == ["home", "data"]
    assert bash_complete(script, "restore", "home", "l") == ["latest"]
    assert "--verbose" in bash_complete(script, "backup", "-")
    assert bash_complete(script, "debug") == []

    zsh = tmp_path / "_btrsendd"
    zsh.write_text(zsh_completion(model))
    subprocess.run(["zsh", "-n", str(zsh)], check=True)

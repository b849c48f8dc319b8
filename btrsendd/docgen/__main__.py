"""``python -m btrsendd.docgen --example config/btrsendd.toml --out DIR``: write the man pages
``btrsendd.8`` and ``btrsendd.toml.5`` and the completions ``btrsendd.bash`` and
``_btrsendd`` (zsh) into DIR, from the installed code and the example configuration."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from btrsendd import __version__
from btrsendd.cli import build_parser
from btrsendd.docgen.cli_model import read_parser
from btrsendd.docgen.command_page import command_page
from btrsendd.docgen.completion import bash_completion, zsh_completion
from btrsendd.docgen.config_model import read_config_doc
from btrsendd.docgen.config_page import config_page

#: Where the packages install the example (``make install`` passes its own DOCDIR).
EXAMPLE_PATH = "/usr/share/doc/btrsendd/btrsendd.toml.example"


def generate(example: str, date: str, example_path: str) -> dict[str, str]:
    """File name -> content of everything generated."""
    commands = read_parser(build_parser())
    return {
        "btrsendd.8": command_page(commands, __version__, date, example_path),
        "btrsendd.toml.5": config_page(read_config_doc(example), __version__, date, example_path),
        "btrsendd.bash": bash_completion(commands),
        "_btrsendd": zsh_completion(commands),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m btrsendd.docgen", description=__doc__)
    parser.add_argument("--example", type=Path, required=True, help="config/btrsendd.toml")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--date", default="", help="the pages' date (YYYY-MM-DD)")
    parser.add_argument(
        "--example-path", default=EXAMPLE_PATH, help="where the example is installed"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    example = args.example.read_text(encoding="utf-8")
    for name, text in generate(example, args.date, args.example_path).items():
        (args.out / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

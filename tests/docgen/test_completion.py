"""bash and zsh completion, run in the real shells: every command and option is offered,
option values are completed from their choices, the file system and the configuration."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.docgen.conftest import commands, options

CONFIG = """\
[storage]
name = "not a source"
[[sources]]
name = "home"
path = "/home"
[[sources]]
  name = 'data'
"""


def bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (the word being completed)."""
    program = f"""
        source {script}
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _btrsendd
        if ((${{#COMPREPLY[@]}})); then printf '%s\\n' "${{COMPREPLY[@]}}"; fi
    """
    proc = subprocess.run(
        ["bash", "-c", program, "bash", "btrsendd", *words],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.splitlines()


def test_bash_offers_every_command_and_option(generated: Path) -> None:
    script = generated / "btrsendd.bash"
    for path, parser in commands():
        flags = {flag for option in options(parser) for flag in option}
        assert set(bash_complete(script, *path, "-")) == flags, path
    top = [name for name, _ in (p for p in commands() if len(p[0]) == 1)]
    assert bash_complete(script, "") == [p[-1] for p in top]
    assert bash_complete(script, "catalog", "") == ["rebuild"]


def test_bash_completes_values(generated: Path, tmp_path: Path) -> None:
    script = generated / "btrsendd.bash"
    config = tmp_path / "btrsendd.toml"
    config.write_text(CONFIG)
    (tmp_path / "restore-here").mkdir()
    (tmp_path / "restore-file").touch()
    assert bash_complete(script, "--log-format", "") == ["auto", "console", "json"]
    assert bash_complete(script, "restore", "--tier", "B") == ["Bulk"]
    assert bash_complete(script, "--config", str(tmp_path / "btrsendd.t")) == [str(config)]
    # --option=value arrives as three words
    assert bash_complete(script, "--config", "=", str(tmp_path / "btrsendd.t")) == [str(config)]
    assert bash_complete(script, "restore", "--target", str(tmp_path / "restore-")) == [
        str(tmp_path / "restore-here")
    ]
    # Source names come from the configuration --config names.
    assert bash_complete(script, "--config", str(config), "backup", "--source", "") == [
        "home",
        "data",
    ]
    assert bash_complete(script, "--config", "=", str(config), "list", "--source", "d") == ["data"]
    # The values of options are not taken for commands.
    rebuild = dict(commands())[("catalog", "rebuild")]
    assert bash_complete(script, "--config", str(config), "catalog", "rebuild", "--") == [
        flag for option in options(rebuild) for flag in option if flag.startswith("--")
    ]


# An interactive zsh in a pseudo-terminal, TAB bound to complete and then print a marker (split
# in two where it is typed, so that the echo of the definition does not match), so each
# completion is read to its end without sleeping.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z 'stty columns 500; TERM=dumb PS1=">" zsh -f -i'
zpty -w z "fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D; btrsendd() { : }"
zpty -w z "zstyle ':completion:*' list-prompt ''; LISTMAX=100000"
zpty -w z 'marked() { zle complete-word; zle -R; print -n "@@DO""NE@@" }; zle -N marked'
zpty -w z 'bindkey "^I" marked'
shift
for line in "$@"; do
  zpty -w -n z "$line"$'\t'
  zpty -r z out "*@@DONE@@*"
  zpty -w -n z $'\x15'
  print -r -- "==CASE==${out}"
done
zpty -d z
"""


def zsh_complete(directory: Path, *lines: str) -> list[str]:
    """For each command line, what zsh shows after a TAB at its end (a listing, or the line
    completed in place), from an interactive zsh in a pseudo-terminal."""
    if not shutil.which("zsh"):
        pytest.fail("zsh is not installed: run `make deps`")
    proc = subprocess.run(
        ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", str(directory), *lines],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The first case's output starts with the echo of the set-up lines.
    return [case.replace("\r", "") for case in proc.stdout.split("==CASE==")[1:]]


def test_zsh_offers_commands_options_and_values(generated: Path, tmp_path: Path) -> None:
    fpath = tmp_path / "functions"
    fpath.mkdir()
    shutil.copy(generated / "_btrsendd", fpath)
    config = tmp_path / "btrsendd.toml"
    config.write_text(CONFIG)
    cases = {
        "btrsendd ": [p[-1] for p, _ in commands() if len(p) == 1],
        "btrsendd restore --": [
            f for o in options(dict(commands())[("restore",)]) for f in o if f.startswith("--")
        ],
        "btrsendd --log-format ": ["auto", "console", "json"],
        "btrsendd catalog rebuild --tier ": ["Bulk", "Expedited", "Standard"],
        f"btrsendd --config {config} list --source ": ["home", "data"],
        "btrsendd catalog re": ["rebuild"],  # the only choice: completed in place
    }
    shown = zsh_complete(fpath, *cases)
    for (line, expected), output in zip(cases.items(), shown, strict=True):
        for word in expected:
            assert word in output.split(), textwrap.indent(output, "  ") + f"\n{line!r}: {word}"
        assert "not found" not in output and "_arguments:" not in output, output

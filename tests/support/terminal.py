"""The real command line on a pseudo-terminal, and what a terminal would show of its output.

``run_on_terminal`` runs ``btrsendd`` with stdin, stdout and stderr on a pty (as a user at a
terminal does), answers its prompts, and returns everything it wrote, escape sequences and
all.  ``screen`` plays that back the way a terminal does (carriage return, erase to the end
of the line, newline), so a test sees the lines a user would be left looking at.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import termios
import time
from collections.abc import Mapping

from tests.support.world import BTRSENDD, World

#: SGR sequences (colours), which change how text looks, not where it goes.
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
#: Carriage return, erase to the end of the line, newline, or one printable run.
_TOKENS = re.compile(r"\r|\x1b\[K|\n|[^\r\n\x1b]+|\x1b")


def run_on_terminal(
    world: World,
    *args: str,
    answers: Mapping[bytes, bytes] | None = None,
    columns: int = 200,
    timeout: float = 120,
) -> tuple[int, str]:
    """Run ``btrsendd --config ... ARGS`` on a pty ``columns`` wide, typing ``answers[prompt]``
    when ``prompt`` appears; returns its exit status and its output (stdout and stderr, as
    the terminal received them, ``\\r\\n`` made ``\\n``)."""
    world.write_config()
    pid, fd = os.forkpty()
    if pid == 0:  # the child: exec at once, whatever happens
        try:
            os.execve(
                BTRSENDD,
                [BTRSENDD, "--config", str(world.config), *args],
                {**os.environ, **world.env},
            )
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    pending = dict(answers or {})
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
            for prompt in [p for p in pending if p in output]:
                os.write(fd, pending.pop(prompt))
        else:
            os.kill(pid, 9)
            raise AssertionError(f"btrsendd {' '.join(args)} did not end in time:\n{output!r}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode().replace("\r\n", "\n")


def plain(output: str) -> str:
    """``output`` without colours."""
    return _COLOURS.sub("", output)


def screen(output: str) -> list[str]:
    """The lines a terminal shows after receiving ``output`` (scrolled back included)."""
    lines = [""]
    column = 0
    for token in _TOKENS.findall(plain(output)):
        if token == "\r":
            column = 0
        elif token == "\x1b[K":
            lines[-1] = lines[-1][:column]
        elif token == "\n":
            lines.append("")
            column = 0
        elif token != "\x1b":
            line = lines[-1]
            lines[-1] = line[:column] + token + line[column + len(token) :]
            column += len(token)
    return lines

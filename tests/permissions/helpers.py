"""What the permission tests share: acting as the local user ``nobody``, the one error line a
refused command prints, file modes, and a copy of the backup host's keyring put to use."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.fixtures.gpg import GpgKey
from tests.support.backups import error_lines
from tests.support.world import World

NOBODY = 65534
FIRST = "2000-01-01"


def as_nobody(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` as the unprivileged local user ``nobody``."""
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        input=stdin,
        capture_output=True,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )


def one_error(proc: subprocess.CompletedProcess[bytes], status: int) -> str:
    """The single error line of a command that had to fail with ``status``."""
    text = proc.stderr.decode()
    assert proc.returncode == status, text
    assert "Traceback" not in text and "internal error" not in text, text
    [line] = [line for line in error_lines(proc) if line.startswith("btrsendd: error:")]
    return line


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def keyring_copy(key: GpgKey, where: Path) -> Path:
    """A copy of the backup host's keyring (public keys only) at ``where``."""
    shutil.copytree(key.public_home, where, ignore=shutil.ignore_patterns("S.*", "*.lock"))
    return where


def use_keyring(world: World, home: Path) -> None:
    world.encryption = (
        f'mode = "gpg"\nrecipients = ["{world.key.fingerprint}"]\ngnupg_home = "{home}"'
    )
    world.write_config()

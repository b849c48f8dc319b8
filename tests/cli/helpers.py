"""What the command-line tests look at: the error line a user sees, the local archive."""

from __future__ import annotations

from tests.world import World


def archive_files(world: World) -> list[str]:
    root = world.work / "archive"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def one_error_line(stderr: bytes) -> str:
    """The error a user sees: exactly one 'btrsendd: error:' line, no traceback."""
    text = stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("btrsendd: error:")]
    assert len(errors) == 1, text
    return errors[0]

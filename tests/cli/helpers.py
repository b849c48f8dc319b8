"""What the command-line tests look at (the error line a user sees, the local archive), and
catalog rows for the commands that word them."""

from __future__ import annotations

from datetime import date

from btrsendd.layout import Located
from btrsendd.model import Backup, Volume
from tests.support.world import World


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


def backup(n: int, day: date, storage_class: str, volumes: int) -> Backup:
    """Backup ``n`` of chain ``b0`` (the full one for 0), with sizes that read well."""
    return Backup(
        id=f"b{n}",
        source="data",
        date=day,
        kind="incremental" if n else "full",
        parent_id=f"b{n - 1}" if n else None,
        parent_date=None,
        chain="b0",
        state="complete",
        snapshot=day.isoformat(),
        snapshot_uuid=None,
        parent_uuid=None,
        compression="zstd",
        recipients=(),
        storage_class=storage_class,
        raw_bytes=10**9 * (n + 1),
        stored_bytes=7 * 10**8 * (n + 1) + 12345,
        volume_count=volumes,
        created_at="2000-01-01T00:00:00+00:00",
        completed_at=None,
    )


def located(b: Backup) -> list[Located]:
    """The volumes of ``b``, its stored bytes shared out among them."""
    size = b.stored_bytes // b.volume_count
    return [
        Located(b, Volume(i, f"v{i}", 0, 1, "x", size, "y"), f"data/{b.id}/v{i}")
        for i in range(b.volume_count)
    ]

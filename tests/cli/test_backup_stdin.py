"""``btrsendd backup-stdin``: btrsend's seed protocol, on real send streams."""

from __future__ import annotations

from tests.support import sendstreams as ss
from tests.support.world import World


def test_backup_stdin_speaks_the_seed_protocol(world: World) -> None:
    def stdin_backup(day: str, payload: bytes) -> bytes:
        return world.run("backup-stdin", "--source", "data", "--date", day, input=payload).stdout

    full = ss.small_stream()  # a SUBVOL stream of subvolume ss.UUID, ctransid 7
    incremental = ss.header() + ss.snapshot(parent_uuid=ss.UUID, parent_ctransid=7) + ss.end()
    assert stdin_backup("2000-01-01", full) == b"c\n"
    assert stdin_backup("2000-01-01", b"") == b""
    assert stdin_backup("2000-01-02", b"") == b""
    assert stdin_backup("2000-01-07", incremental) == b"i 2000-01-01\n"
    backups = world.list()
    assert [(b["date"], b["kind"], b["parent"]) for b in backups] == [
        ("2000-01-01", "full", None),
        ("2000-01-07", "incremental", "2000-01-01"),
    ]
    assert backups[0]["raw_bytes"] == len(full)

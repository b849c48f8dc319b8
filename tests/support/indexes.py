"""Reading back what a world's backups stored of their file indexes, and what a send stream
indexed afresh says, to compare the two."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from btrsendd.config import load_config
from btrsendd.fileindex.records import Index
from btrsendd.fileindex.stored import load_index
from btrsendd.fileindex.storedform import read_index
from btrsendd.model import Backup
from btrsendd.pipeline.btrfs import run_send, send_command
from btrsendd.pipeline.sendindex import index_stream
from btrsendd.repository import Repository, open_repository
from tests.support.world import World


@contextmanager
def repository(world: World) -> Iterator[Repository]:
    """The world's repository, as the engines open it."""
    with open_repository(load_config(world.write_config())) as repo:
        yield repo


def row_of(repo: Repository, backup_id: str) -> Backup:
    row = repo.catalog.backup(backup_id)
    assert row is not None, backup_id
    return row


def stored_index(world: World, backup_id: str) -> Index:
    """The index ``load_index`` reads back for one backup, with the world's private key."""
    with repository(world) as repo:
        return load_index(repo, row_of(repo, backup_id), world.key.secret_home)


def fresh_index(snapshot: Path, parent: Path | None = None) -> Index:
    """The index of ``btrfs send`` of ``snapshot`` (against ``parent``), indexed at once."""
    out = io.BytesIO()
    with run_send(send_command(snapshot, parent)) as raw:
        index_stream(raw, out)
    out.seek(0)
    return read_index(out, str(snapshot))

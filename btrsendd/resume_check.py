"""Whether an interrupted upload can be resumed: its snapshots, and the stored volumes' bytes.

A resume re-runs the same ``btrfs send`` and skips the volumes already stored; it is only
sound if the snapshots are the ones the upload began with and the replayed stream hashes to
what each stored volume recorded.  ``upload.py`` resumes; this module says whether it may.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from btrsendd import snapshots
from btrsendd.config import SourceConfig
from btrsendd.errors import OperationalError
from btrsendd.model import Backup
from btrsendd.pipeline.codec import Codec
from btrsendd.pipeline.readers import CHUNK
from btrsendd.repository import Repository
from btrsendd.storage.base import Readable


class ResumeMismatch(OperationalError):
    """The replayed send stream does not match what was stored: resume is impossible."""


def resume_plan(
    repo: Repository, codec: Codec, src: SourceConfig, row: Backup
) -> tuple[snapshots.Snapshot, snapshots.Snapshot | None] | None:
    """The snapshots to replay ``row``'s send from, if all are present and unchanged."""
    if (row.compression, row.recipients) != (codec.compression, codec.recipients):
        return None  # the configuration changed: the stored volumes no longer fit
    local = {s.name: s for s in snapshots.list_snapshots(src.snapshot_dir)}
    snap = local.get(row.snapshot or "")
    if snap is None or snap.uuid != row.snapshot_uuid:
        return None
    if row.parent_id is None:
        return snap, None
    parent = repo.catalog.backup(row.parent_id)
    parent_snap = None if parent is None else snapshots.snapshot_of(src.snapshot_dir, parent)
    if parent_snap is None or parent_snap.uuid != row.parent_uuid:
        return None
    return snap, parent_snap


def hash_prefix(stream: Readable, length: int, read: Callable[[int], None]) -> str:
    """SHA-256 of the next ``length`` bytes of ``stream`` (fewer if it ends early); ``read``
    is told how many bytes each read brought."""
    digest = hashlib.sha256()
    while length > 0:
        data = stream.read(min(CHUNK, length))
        if not data:
            break
        digest.update(data)
        read(len(data))
        length -= len(data)
    return digest.hexdigest() if length == 0 else "short stream"

"""What ``catalog rebuild`` reads the bucket as: every key with its stored versions, oldest
first, and which version of each object a manifest describes.

Without versions each key has one candidate, the object there now.  In a bucket that keeps
versions, anyone with the host's credentials can add versions and delete markers, but never
remove a locked version (Object Lock): so a manifest's versions are tried oldest first, a
volume's version is the one with the size and checksum its manifest records, and delete
markers are looked through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from btrsendd.model import Volume
from btrsendd.storage.base import Storage, Version, Versioned, same_checksum

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    """One stored version of a key (``version`` None: the current object, unversioned)."""

    size: int
    version: str | None
    #: When the storage says the version was written (it sets the time; no writer can):
    #: of two backups of one day, the one stored first is the genuine one.
    stored_at: datetime | None = None


def inventory(storage: Storage, root: str) -> dict[str, list[Candidate]]:
    """Every key under ``root`` with its versions, oldest first; delete markers left out."""
    if not (isinstance(storage, Versioned) and storage.keeps_versions()):
        return {o.key: [Candidate(o.size, None)] for o in storage.list(root)}
    by_key: dict[str, list[tuple[int, Version]]] = {}
    for position, v in enumerate(storage.versions(root)):
        if not v.delete_marker:
            by_key.setdefault(v.key, []).append((position, v))
    # S3 lists a key's versions newest first: that order breaks ties of equal times.
    return {
        key: [
            Candidate(v.size, v.version, v.modified)
            for _, v in sorted(found, key=lambda p: (p[1].modified or _NEVER, -p[0]))
        ]
        for key, found in by_key.items()
    }


def stored_version(
    storage: Storage, key: str, volume: Volume, candidates: list[Candidate]
) -> Candidate | str:
    """The version of ``key`` that holds ``volume``, or what is wrong, as a phrase.

    The oldest with the recorded size; where versions exist and the manifest recorded the
    storage's checksum, the oldest whose checksum is that one (a HEAD each, no retrieval),
    since garbage written over a volume can have its size.
    """
    if not candidates:
        return f"volume {volume.index} missing"
    sized = [c for c in candidates if c.size == volume.stored_size]
    if not sized:
        return (
            f"volume {volume.index} is {candidates[-1].size} bytes, {volume.stored_size} recorded"
        )
    if sized[0].version is None or volume.stored_checksum is None:
        return sized[0]
    for c in sized:
        if same_checksum(volume.stored_checksum, storage.checksum(key, c.version)):
            return c
    return f"volume {volume.index} has no version with the checksum recorded"

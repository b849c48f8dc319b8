"""Versions no backup owns, in a bucket that keeps versions: what ``verify`` reports beside
orphans, and what ``verify --clean`` deletes once no lock holds them.

A delete by key there only adds a delete marker, and anyone with write access can add a
version under a backup's key: both stay billed, and neither shows in a plain listing.
"""

from __future__ import annotations

from collections.abc import Sequence

from btrsendd.layout import Located
from btrsendd.model import Backup
from btrsendd.repository import Repository
from btrsendd.storage.base import Version, Versioned


def listed_versions(repo: Repository, root: str) -> list[Version] | None:
    """Every version under ``root``; None if the storage keeps no versions."""
    storage = repo.storage
    if not (isinstance(storage, Versioned) and storage.keeps_versions()):
        return None
    return list(storage.versions(root))


def _owned(
    repo: Repository, complete: Sequence[Backup], volumes: Sequence[Located]
) -> set[tuple[str, str | None]]:
    owned = {(repo.layout.manifest_key(r), r.manifest_version) for r in complete}
    for r in complete:
        if r.file_index is not None:
            owned.add((repo.layout.key(r, r.file_index.name), r.file_index.version))
    return owned | {(v.key, v.version) for v in volumes}


def recorded_sizes(
    repo: Repository,
    sizes: dict[str, int],
    listing: Sequence[Version],
    complete: Sequence[Backup],
    volumes: Sequence[Located],
) -> dict[str, int]:
    """``sizes`` (of the current objects, by key) with the size of the recorded version for
    every object whose version was recorded, and without it where that version is gone:
    what is written over a backup's key since does not change what a restore reads."""
    listed = {(v.key, v.version): v.size for v in listing if not v.delete_marker}
    result = dict(sizes)
    for key, version in _owned(repo, complete, volumes):
        if version is None:
            continue
        if (key, version) in listed:
            result[key] = listed[(key, version)]
        else:
            result.pop(key, None)
    return result


def stray_versions(
    repo: Repository,
    listing: Sequence[Version],
    complete: Sequence[Backup],
    volumes: Sequence[Located],
    referenced: set[str],
    in_flight: Sequence[str],
) -> list[Version]:
    """Every version and delete marker in ``listing`` that no backup owns.

    Owned: the recorded versions of complete backups' manifests, file indexes and volumes
    (every version, for objects stored before versions were recorded), everything under a
    backup in flight (``in_flight`` directories), every version of a key only an unknown
    backup refers to (``referenced`` minus the catalog's keys: a rebuild may adopt it), and
    the versions a locked deletion deferred (the caller passes their directories in
    ``in_flight`` too).  In such storage, orphans are reported here, as versions.
    """
    owned = _owned(repo, complete, volumes)
    owned |= {(d.key, d.version) for d in repo.catalog.deferred_deletions()}
    cataloged = {key for key, _ in owned}
    stray = []
    for v in listing:
        if (v.key, v.version) in owned or any(v.key.startswith(d) for d in in_flight):
            continue
        if v.key in referenced and v.key not in cataloged:
            continue  # an unknown backup's
        if not v.delete_marker and (v.key, None) in owned:
            # Recorded before versions were: which one was written is not known, and a
            # newer one (written over it) is no reason to delete the genuine one.
            continue
        stray.append(v)
    return stray


def delete_unlocked(repo: Repository, versions: Sequence[Version]) -> list[Version]:
    """Delete the ``versions`` no lock holds; returns those still locked."""
    if not versions or not isinstance(repo.storage, Versioned):
        return list(versions)
    asked = repo.may_be_locked()
    locked = [v for v in versions if asked and repo.locked_until([v]) is not None]
    repo.storage.delete_versions([v for v in versions if v not in locked])
    return locked


def record_strays(repo: Repository, source: str, versions: Sequence[Version]) -> None:
    """Remember what was found, for ``status``, which counts what it costs without listing
    the bucket."""
    repo.catalog.record_strays(source, len(versions), sum(v.size for v in versions))

"""``btrsendd verify``: is every backup stored as the catalog says, and nothing else?

Shallow (the default) costs no retrieval: one listing per source checks that every volume of
every complete backup is there with its recorded size, every manifest is read (manifests are
STANDARD) and compared with the catalog, and objects nothing refers to are reported as
orphans.  Contents are checked too, each the cheapest way its backend allows: the local
backend re-hashes every file, since reading a file is free; on S3, reading an archived
object is a paid retrieval, so a HEAD request (free, even for archived objects) fetches the
checksum S3 computed when it accepted the upload and compares it with the one recorded then
(for a multipart object that is a checksum of part checksums, which is why the manifest's
whole-volume SHA-256 alone would not do).  A vault reports nothing for free: size only.

``--deep`` (``verify_deep.py``) restores the newest backup of each source into a scratch btrfs
on a loop device and compares it file by file with the local snapshot of that day: the one
check that proves the private key, the codecs and ``btrfs receive`` all still work.  It pays
for retrievals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from btrsendd.damage import free_damage
from btrsendd.errors import BtrsenddError, NotThawedError
from btrsendd.fileindex.stored import index_problems
from btrsendd.layout import MANIFEST_NAME, Located
from btrsendd.manifest import Manifest, read_manifest, shown
from btrsendd.model import Backup, Volume
from btrsendd.names import UnsafeName, check_name
from btrsendd.repository import Repository
from btrsendd.storage.base import IncompleteUploads, ObjectInfo, Version
from btrsendd.storage.common import check_key
from btrsendd.stray_versions import (
    delete_unlocked,
    listed_versions,
    record_strays,
    recorded_sizes,
    stray_versions,
)
from btrsendd.units import human_bytes

#: Catalog fields a manifest must agree on (timestamps are informational).
_MANIFEST_FIELDS = (
    "id",
    "source",
    "date",
    "kind",
    "parent_id",
    "chain",
    "snapshot",
    "snapshot_uuid",
    "parent_uuid",
    "compression",
    "recipients",
    "storage_class",
    "raw_bytes",
    "stored_bytes",
)


@dataclass
class Report:
    """What verifying one source found."""

    source: str
    problems: list[str] = field(default_factory=list)
    orphans: list[ObjectInfo] = field(default_factory=list)
    #: Keys of unfinished multipart uploads: invisible in listings, billed until aborted.
    uploads: list[str] = field(default_factory=list)
    #: Versions and delete markers no backup owns, in a bucket that keeps versions.
    versions: list[Version] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def orphan_count(self) -> int:
        return len(self.orphans) + len(self.uploads) + len(self.versions)


def _manifest_differences(manifest: Manifest, row: Backup, volumes: list[Volume]) -> list[str]:
    differing = [
        name for name in _MANIFEST_FIELDS if getattr(manifest.backup, name) != getattr(row, name)
    ]
    # Versions are the storage's names for what was written, which the manifest predates.
    if manifest.volumes != tuple(replace(v, version=None) for v in volumes):
        differing.append("volumes")
    if manifest.backup.file_index != (row.file_index and replace(row.file_index, version=None)):
        differing.append("file_index")
    return differing


def _read_manifest(
    repo: Repository, key: str, size: int, version: str | None = None
) -> Manifest | str | None:
    """The manifest at ``key`` (``size`` bytes listed); a problem's text if it is unreadable
    or not one btrsendd can trust (``manifest.py``); None if archived.

    Manifests are STANDARD on S3 and files locally; only a vault archives them, and reading
    one there is a paid retrieval that a shallow check does not make.
    """
    try:
        return read_manifest(repo.storage, key, size, version)
    except NotThawedError:
        return None
    except BtrsenddError as exc:
        return str(exc)


def _check_manifests(
    repo: Repository,
    complete: Sequence[Backup],
    volumes: Sequence[Located],
    sizes: dict[str, int],
    report: Report,
) -> int:
    """Compare each complete backup's manifest with the catalog (``volumes``: the catalog's
    volumes of ``complete``; ``sizes``: the listing); returns how many could not be read for
    free (archived)."""
    by_backup: dict[str, list[Volume]] = {row.id: [] for row in complete}
    for vol in volumes:
        by_backup[vol.backup.id].append(vol.volume)
    archived = 0
    for row in complete:
        key = repo.layout.manifest_key(row)
        if key not in sizes:
            report.problems.append(
                f"backup {row.id} ({row.date}): its manifest {key} is missing, so a catalog "
                "rebuild would lose this backup"
            )
            continue
        manifest = _read_manifest(repo, key, sizes[key], row.manifest_version)
        if isinstance(manifest, str):
            report.problems.append(f"backup {row.id} ({row.date}): {manifest}")
        elif manifest is None:
            archived += 1
        else:
            differing = _manifest_differences(manifest, row, by_backup[row.id])
            if differing:
                report.problems.append(
                    f"backup {row.id} ({row.date}): its manifest {key} disagrees with the "
                    f"catalog on {', '.join(differing)}"
                )
    return archived


def _unknown_backups(
    repo: Repository, root: str, sizes: dict[str, int], known: set[str], report: Report
) -> set[str]:
    """Report backups whose manifests the catalog does not know; return the keys they own.

    They are backups, not litter: a rebuild adopts them, and ``--clean`` must never delete
    them.  A manifest that cannot be read or trusted still owns its whole directory: its
    volumes may be a backup that a newer btrsendd, or a repaired manifest, can restore.
    """
    owned = set()
    for key, size in sizes.items():
        backup_id, _, name = key[len(root) :].partition("/")
        if name != MANIFEST_NAME or backup_id in known:
            continue
        owned.add(key)
        directory = key.rpartition("/")[0] + "/"
        manifest = _unknown_manifest(repo, key, size, backup_id)
        if not isinstance(manifest, Manifest):  # archived, untrusted or misplaced: keep it all
            owned.update(k for k in sizes if k.startswith(directory))
        if isinstance(manifest, str):
            report.problems.append(f"{manifest}; `btrsendd catalog rebuild` skips it")
            continue
        when = ""
        if manifest is not None:
            owned.update(directory + n for n in manifest.object_names())
            when = f" ({manifest.backup.date})"
        report.problems.append(
            f"backup {backup_id}{when} is in storage but not in the catalog; "
            "`btrsendd catalog rebuild --force` adopts it"
        )
    return owned


def _unknown_manifest(
    repo: Repository, key: str, size: int, backup_id: str
) -> Manifest | str | None:
    """``_read_manifest`` of a manifest the catalog does not know, which must also sit in
    its backup's directory (``backup_id``, a name from storage, so checked first)."""
    try:
        check_name("backup id", backup_id)
    except UnsafeName as exc:
        return f"{shown(key)}: not in a backup's directory: {exc}"
    manifest = _read_manifest(repo, key, size)
    if isinstance(manifest, Manifest):
        b = manifest.backup
        place = repo.layout.backup_dir(b.source, b.id)
        if not key.startswith(place):
            return (
                f"{shown(key)}: it describes backup {b.id} of {b.source}, which belongs "
                f"under {place}"
            )
    return manifest


def check_source(repo: Repository, source: str, *, rehash: bool, idle: bool) -> Report:
    """The shallow check of one source: volumes, manifests, orphans.

    ``idle``: no backup is running, so even an interrupted backup's unfinished uploads
    (temporary files, open multipart uploads) are leftovers to report; otherwise they may be
    a running upload's own and are left out.
    """
    report = Report(source)
    root = repo.layout.source_root(source)
    objects = {o.key: o for o in repo.storage.list(root)}
    rows = repo.catalog.backups(source, states=("complete", "uploading", "expiring"))
    complete = [r for r in rows if r.state == "complete"]
    volumes = repo.volumes(complete)
    sizes = {key: o.size for key, o in objects.items()}
    listing = listed_versions(repo, root)
    if listing is not None:
        sizes = recorded_sizes(repo, sizes, listing, complete, volumes)
    damage = free_damage(repo.storage, volumes, rehash=rehash, sizes=sizes)
    report.problems += [str(d) for d in damage] + index_problems(repo, complete, sizes)
    archived = _check_manifests(repo, complete, volumes, sizes, report)
    # Deleted backups whose objects wait for their lock to end are no strangers either.
    waiting = {d.key.rpartition("/")[0] + "/" for d in repo.catalog.deferred_deletions(source)}
    known = {r.id for r in rows} | {d[len(root) : -1] for d in waiting}
    referenced = {v.key for v in volumes} | {repo.layout.manifest_key(r) for r in complete}
    referenced |= {k for r in complete if (k := repo.layout.index_key(r)) is not None}
    referenced |= _unknown_backups(repo, root, sizes, known, report)
    # Backups in flight (or interrupted) own their whole directory: the repo cleans them.
    in_flight = [repo.layout.backup_dir_of(r) for r in rows if r.state != "complete"]
    if listing is not None:
        # Every version, current or not, of what no backup owns: deleted by version id.
        report.versions = stray_versions(
            repo, listing, complete, volumes, referenced, [*in_flight, *waiting]
        )
        record_strays(repo, report.source, report.versions)
    else:
        report.orphans = [
            o
            for key, o in objects.items()
            if key not in referenced and not any(key.startswith(d) for d in in_flight)
        ]
    if isinstance(repo.storage, IncompleteUploads):
        running = [] if idle else in_flight
        report.uploads = [
            key
            for key in repo.storage.incomplete_uploads(root)
            if not any(key.startswith(d) for d in running)
        ]
    stored = human_bytes(sum(v.volume.stored_size for v in volumes))
    report.notes.append(
        f"{len(complete)} backup(s), {len(volumes)} volume(s), {stored}: "
        + _how_checked(volumes, rehash)
        + (f"; {archived} archived manifest(s) not compared" if archived else "")
    )
    return report


def _how_checked(volumes: Sequence[Located], rehash: bool) -> str:
    if rehash:
        return "checked by size and SHA-256"
    unsummed = sum(v.volume.stored_checksum is None for v in volumes)
    if not unsummed:
        return "checked by size and the storage's checksum"
    if unsummed == len(volumes):
        return "checked by size (no storage checksum recorded)"
    return (
        f"checked by size and the storage's checksum; {unsummed} volume(s) by size only "
        "(stored before btrsendd recorded checksums, or by a backend that keeps none)"
    )


def _plain_key(key: str) -> bool:
    """Whether btrsendd could have written ``key``: relative, no empty, '.' or '..' segment,
    nothing unprintable (which S3's XML requests cannot even carry)."""
    try:
        check_key(key)
    except ValueError:
        return False
    return key.isprintable()


@dataclass(frozen=True)
class Cleaned:
    """What ``clean`` did."""

    deleted: int
    #: Orphans left because btrsendd never writes such keys (someone else put them there).
    left: int
    #: Unfinished uploads aborted.
    aborted: int
    #: Stray versions deleted, and those left because a lock still holds them.
    versions_deleted: int = 0
    versions_locked: int = 0


def clean(repo: Repository, report: Report) -> Cleaned:
    """Delete the orphans and abort the unfinished uploads ``report`` found (under the state
    directory's lock, so no backup is writing)."""
    # A key btrsendd would never write (put there by someone else) is not one it hands to the
    # storage either: it stays, reported.
    odd = [o for o in report.orphans if not _plain_key(o.key)]
    deletable = [o for o in report.orphans if _plain_key(o.key)]
    if deletable:
        repo.storage.delete([o.key for o in deletable])
    report.orphans = odd
    aborted = 0
    if isinstance(repo.storage, IncompleteUploads):
        # All of them, those of interrupted backups too: the lock is held, so none is
        # running, and the next cycle resumes an interrupted backup with a new upload.
        root = repo.layout.source_root(report.source)
        aborted = repo.storage.abort_incomplete_uploads(root)
        report.uploads = []
    plain = [v for v in report.versions if _plain_key(v.key)]
    locked = delete_unlocked(repo, plain)
    report.versions = [v for v in report.versions if v not in plain or v in locked]
    record_strays(repo, report.source, report.versions)
    return Cleaned(len(deletable), len(odd), aborted, len(plain) - len(locked), len(locked))

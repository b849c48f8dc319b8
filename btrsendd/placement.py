"""Where the configured paths sit among btrfs subvolumes, and what that does to the backups.

A ``btrfs send`` stream holds exactly one subvolume.  So a subvolume nested anywhere under a
source is in none of its backups (a snapshot shows an empty directory in its place, a restore
not even that), and whatever lies in the source's own subvolume is in all of them.  So:

- nested subvolumes are reported, by path: by ``check-config`` and in every backup's log
  (``backup.nested_subvolumes``), except btrsendd's own (the snapshot directories, a local
  archive) and other sources, which are backed up on their own;
- ``check-config`` refuses a local archive in a source's own subvolume (every backup would
  hold the archive, which grows by a backup each time) and a snapshot directory there (its
  snapshots would be part of the source).  A subvolume of its own is fine, and btrsendd
  makes a missing snapshot directory one when its parent is in the source's subvolume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from btrsendd.config import Config, SourceConfig
from btrsendd.findings import Finding, error, warning
from btrsendd.manifest import shown
from btrsendd.pipeline import btrfs
from btrsendd.storage import backend_of

#: How many nested subvolumes a check-config line names before it only counts the rest.
_NAMED = 10


def _key(config: Config, src: SourceConfig, field: str) -> str:
    return f"sources[{config.sources.index(src)}].{field} (name = {src.name!r})"


def archive_directory(config: Config) -> Path | None:
    """The directory on this machine holding the archive (the local backend's), if any."""
    return backend_of(config.storage).archive_directory(config.storage)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, tops: Sequence[Path]) -> bool:
    return any(path == top or top in path.parents for top in tops)


def nested_subvolumes(config: Config, src: SourceConfig) -> btrfs.Nested:
    """The subvolumes under ``src`` that none of its backups holds, and no other source.

    btrsendd's own subvolumes (snapshot directories and what is in them, a local archive)
    are left out, and so are other sources nested in this one with everything under them:
    those are backed up, or reported, on their own.
    """
    own = [s.snapshot_dir for s in config.sources] + [s.path for s in config.sources if s != src]
    if (archive := archive_directory(config)) is not None:
        own.append(archive)
    tops = [_real(p) for p in own]
    root = _real(src.path)
    found = btrfs.nested_subvolumes(src.path)
    return btrfs.Nested(
        [p for p in found.paths if not _within(root / p.relative_to(src.path), tops)],
        found.unnamed,
    )


def nested_problems(config: Config) -> list[Finding]:
    """One warning per source with nested subvolumes, naming them."""
    found: list[Finding] = []
    for src in config.sources:
        if not btrfs.is_subvolume(src.path):
            continue  # reported as the source's own error
        nested = nested_subvolumes(config, src)
        count = len(nested.paths) + nested.unnamed
        if not count:
            continue
        # Users name their subvolumes: quoted if they hold what a terminal would act on.
        named = ", ".join(shown(str(p)) for p in nested.paths[:_NAMED])
        if len(nested.paths) > _NAMED:
            named += f" and {len(nested.paths) - _NAMED} more"
        if nested.unnamed:
            named += f"{' and ' if named else ''}{nested.unnamed} that btrfs cannot name"
            named += " (nested too deep)"
        found.append(
            warning(
                _key(config, src, "path"),
                f"{count} subvolume(s) nested in {src.path} are in none of its backups "
                f"(a btrfs send stream stops at subvolume boundaries): {named}; give each one "
                "worth keeping a [[sources]] entry of its own, or make it a plain directory",
            )
        )
    return found


def _made_as_subvolume(owner: SourceConfig) -> bool:
    """Whether btrsendd will create ``owner``'s missing snapshot directory as a subvolume:
    it does when its parent is in ``owner``'s own subvolume (``snapshots.take_snapshot``)."""
    path = owner.snapshot_dir
    return not path.exists() and btrfs.in_subvolume_of(path, owner.path)


def inside_problems(config: Config) -> list[Finding]:
    """Errors for a local archive or a snapshot directory in some source's own subvolume, and
    for a local archive holding a source or a snapshot directory."""
    found: list[Finding] = []
    if (around := archive_problem(config)) is not None:
        found.append(error("storage.path", around))
    for src in config.sources:
        if not btrfs.is_subvolume(src.path):
            continue
        for owner in config.sources:
            path = owner.snapshot_dir
            if _made_as_subvolume(owner) or not btrfs.in_subvolume_of(path, src.path):
                continue
            key = _key(config, owner, "snapshot_dir")
            if path.exists():
                found.append(error(key, _plain_snapshot_dir(path, src)))
            else:
                found.append(
                    error(
                        key,
                        f"{path} would be made a plain directory in the subvolume of source "
                        f"{src.name!r} ({src.path}), and so be part of its backups; create it "
                        f"as a subvolume first: btrfs subvolume create {path} && chmod 700 {path}",
                    )
                )
        archive = archive_directory(config)
        if archive is not None and btrfs.in_subvolume_of(archive, src.path):
            found.append(
                error(
                    "storage.path",
                    f"{archive} is in the subvolume of source {src.name!r} ({src.path}): "
                    "every backup of it would hold the archive, which grows by a backup "
                    f"each time; put the archive outside {src.path} (another filesystem is "
                    "best), or in a subvolume of its own (btrfs subvolume create DIR)",
                )
            )
    return found


def archive_problem(config: Config) -> str | None:
    """Why the local archive cannot be where it is, or None.

    Everything under the archive is listed as objects: a source or a snapshot directory
    there would be listed with it, backups written into it, and ``verify --clean`` would
    delete its files as orphans (seen: every file of a live source, with ``storage.path``
    set to the pool holding the sources).  Every command refuses it, not only
    ``check-config``.
    """
    archive = archive_directory(config)
    if archive is None:
        return None
    top = [_real(archive)]
    for src in config.sources:
        for path, what in (
            (src.path, f"source {src.name!r} ({src.path})"),
            (src.snapshot_dir, f"the snapshot_dir of source {src.name!r} ({src.snapshot_dir})"),
        ):
            if _within(_real(path), top):
                return (
                    f"{archive} holds {what}: btrsendd would write backups into it and "
                    "`verify --clean` would delete its files as objects nobody refers to; put "
                    "the archive in a directory of its own, outside every source and snapshot_dir"
                )
    return None


def _plain_snapshot_dir(path: Path, src: SourceConfig) -> str:
    return (
        f"{path} is a plain directory in the subvolume of source {src.name!r} ({src.path}), "
        f"so it is part of its backups; make it a subvolume of its own: mv {path} {path}.old "
        f"&& btrfs subvolume create {path} && chmod 700 {path} (the next backup is then a "
        f"full one; once it is stored, delete the snapshots in {path}.old with btrfs "
        "subvolume delete)"
    )

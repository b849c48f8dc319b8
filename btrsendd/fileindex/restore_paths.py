"""``restore --path``: some paths of a day, for the price of the volumes that hold them.

The chain's file indexes (readable without a thaw) are replayed into the day's tree
(``tree.py``); the entries asked for, with their ancestors, name the pieces of stream their
contents are, and so the volumes to read (``fetch.needed_volumes``).  Only those are
checked, surveyed, thawed and paid for, through the same ``RestoreJob`` a whole restore
uses; the plan shows beside them what the whole chain would cost.

What is restored goes into a private working directory in the target, named
``.btrsendd-paths-*``, and becomes ``TARGET/<day's snapshot name>`` with one rename once
everything is in, as a whole restore's day does: the target gains a complete tree or
nothing, and never has what was there replaced (the rename refuses an existing name).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from btrsendd.errors import OperationalError, UsageError
from btrsendd.fileindex.entries import Entry, Piece
from btrsendd.fileindex.extract import Extractor, Refused, check_entries
from btrsendd.fileindex.fetch import VolumeWants, fetch, needed_volumes, wanted
from btrsendd.fileindex.stored import load_index
from btrsendd.fileindex.tree import Tree
from btrsendd.interrupt import Interrupted
from btrsendd.layout import Located
from btrsendd.model import Backup
from btrsendd.pipeline.gpg import check_private_keys
from btrsendd.pricing import Fetch, Prices
from btrsendd.repository import Repository
from btrsendd.restore import RestoreJob, check_names
from btrsendd.restore_plan import RestorePlan
from btrsendd.storage.throttle import Throttle

#: Working directories of path restores start with this.
PREFIX = ".btrsendd-paths-"

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


def wanted_path(text: str) -> str:
    """A ``--path`` as the tree names it: relative to the subvolume, no leading '/' ("/"
    is the root, ""); '.' and empty components mean nothing, as in a shell ('./docs/')."""
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in text:
        raise UsageError(f"--path {text!r} must name a path inside the backed-up subvolume")
    return "/".join(parts)


@dataclass(frozen=True)
class PathPlan:
    """The plan of the volumes to read, beside what a whole-chain restore would read and cost."""

    selected: RestorePlan
    #: Per backup of the chain: how many of its volumes are read, and their stored bytes.
    reads: dict[str, tuple[int, int]]
    chain_objects: int
    chain_stored_bytes: int
    #: Per tier: thawing every volume of the chain (as if none were) and downloading it.
    chain_costs: dict[str, float]


@dataclass
class PathRestore:
    """Some paths of a day on their way from storage to a directory on any file system."""

    job: RestoreJob
    entries: list[Entry]
    needed: list[VolumeWants]
    chain_volumes: list[Located]

    @classmethod
    def prepare(
        cls, repo: Repository, chain: list[Backup], paths: Sequence[str], gnupg_home: Path | None
    ) -> PathRestore:
        """Read the chain's indexes, find the paths' entries and the volumes holding them,
        and run every free check on those volumes."""
        wanted_day = chain[-1]
        missing = [row for row in chain if row.file_index is None]
        if missing:
            raise UsageError(
                f"backup {missing[0].id} ({missing[0].date}) of the chain of {wanted_day.source} "
                f"{wanted_day.date} has no file index (it was made before btrsendd kept one), "
                "so single paths cannot be found in it; restore the whole day instead "
                "(without --path, into a directory on btrfs)"
            )
        # The names become keys (the indexes') before anything else does.
        chain_volumes = repo.volumes(chain)
        check_names(chain_volumes)
        check_private_keys(chain, gnupg_home)
        tree = Tree()
        for row in chain:
            tree.apply(row.id, load_index(repo, row, gnupg_home))
        entries = _entries(tree, paths, wanted_day)
        check_entries(entries)
        _refuse_unrestorable(entries)
        wants = wanted(_contents(entries))
        needed = needed_volumes(chain_volumes, wants)
        job = RestoreJob.prepare(repo, chain, gnupg_home, [n.volume for n in needed])
        return cls(job, entries, needed, chain_volumes)

    def plan(self, prices: Prices, tier: str) -> PathPlan:
        selected = self.job.plan(prices, tier)
        fetches = [
            Fetch(
                v.backup.storage_class, v.volume.stored_size, v.backup.storage_class in prices.thaw
            )
            for v in self.chain_volumes
        ]
        tiers = [o.tier for o in selected.options] or [tier]
        reads: dict[str, tuple[int, int]] = {row.id: (0, 0) for row in self.job.chain}
        for vol in self.job.volumes:
            count, size = reads[vol.backup.id]
            reads[vol.backup.id] = (count + 1, size + vol.volume.stored_size)
        return PathPlan(
            selected=selected,
            reads=reads,
            chain_objects=len(self.chain_volumes),
            chain_stored_bytes=sum(v.volume.stored_size for v in self.chain_volumes),
            chain_costs=dict(_costs(prices, fetches, tiers)),
        )

    def extract(
        self, target: int, target_path: Path, name: str, gnupg_home: Path | None, throttle: Throttle
    ) -> Refused:
        """Recreate the entries in ``target`` (an open directory) as ``name``; what the
        target's file system refused to hold is returned, to be told."""
        work = PREFIX + secrets.token_hex(4)
        try:
            os.mkdir(work, 0o700, dir_fd=target)
        except OSError as exc:
            raise OperationalError(f"cannot create {target_path / work}: {exc.strerror}") from None
        try:
            root = os.open(work, _DIR, dir_fd=target)
            extractor = Extractor(root)
            try:
                extractor.create(self.entries)
                fetch(
                    self.job.repo.storage,
                    self.needed,
                    extractor.write,
                    gnupg_home=gnupg_home,
                    throttle=throttle,
                )
                extractor.finish()
            finally:
                extractor.close()
                os.close(root)
            rename_new(target, work, name, target_path)
        except (OperationalError, OSError) as exc:
            remove_tree(target, work)
            raise OperationalError(f"{exc}; nothing was left in {target_path}") from None
        except Interrupted as exc:
            remove_tree(target, work)
            exc.tell(f"nothing was left in {target_path}; run the same restore again")
            raise
        except BaseException:
            remove_tree(target, work)
            raise
        self.job.repo.catalog.forget_restore_requests(v.key for v in self.job.volumes)
        return extractor.refused


def _costs(prices: Prices, fetches: list[Fetch], tiers: list[str]) -> Iterator[tuple[str, float]]:
    """Each of ``tiers`` that every class among ``fetches`` offers, with its estimate."""
    for tier in tiers:
        try:
            yield tier, prices.estimate(fetches, tier)
        except UsageError:
            continue


def _refuse_unrestorable(entries: Sequence[Entry]) -> None:
    """Refuse, before anything is spent, a file whose data the streams do not hold as bytes
    to write (sent compressed as is, or not sent at all)."""
    for entry in entries:
        for piece in entry.pieces:
            if piece.unrestorable is not None:
                raise OperationalError(
                    f"the data of {entry.path!r} was {piece.unrestorable}; restore the whole "
                    "day instead (without --path, into a directory on btrfs)"
                )


def _entries(tree: Tree, paths: Sequence[str], day: Backup) -> list[Entry]:
    """The entries of ``paths`` and everything below them, with every ancestor (the root
    first), parents before children, each once."""
    found: dict[str, Entry] = {}
    for path in paths:
        entry = tree.entry(path)
        if entry is None:
            raise UsageError(
                f"{path or '/'} did not exist in {day.source} on {day.date}; `btrsendd find "
                f"--source {day.source} PATTERN` tells on which days a path did"
            )
        parts = path.split("/") if path else []
        for depth in range(len(parts)):
            ancestor = tree.entry("/".join(parts[:depth]))
            if ancestor is None:
                raise OperationalError(f"the day's tree has {path!r} but not its parent")
            found.setdefault(ancestor.path, ancestor)
        for below in tree.entries(path):
            found.setdefault(below.path, below)
    return sorted(found.values(), key=lambda e: e.path.split("/") if e.path else [])


def _contents(entries: Sequence[Entry]) -> list[tuple[str, Sequence[Piece]]]:
    """Each file's pieces, once per inode (its other names are hard links to it)."""
    seen: set[int] = set()
    files: list[tuple[str, Sequence[Piece]]] = []
    for entry in entries:
        if entry.kind == "file" and entry.inode not in seen:
            seen.add(entry.inode)
            files.append((entry.path, entry.pieces))
    return files


def rename_new(directory: int, old: str, new: str, where: Path) -> None:
    """Rename ``old`` to ``new`` in ``directory``, refusing to replace anything there."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(directory, os.fsencode(old), directory, os.fsencode(new), _RENAME_NOREPLACE):
        code = ctypes.get_errno()
        if code == errno.EINVAL:
            # A file system without RENAME_NOREPLACE (NFS): a plain rename fails on any
            # existing name but an empty directory, which would replace nothing.
            try:
                os.stat(new, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    os.rename(old, new, src_dir_fd=directory, dst_dir_fd=directory)
                    return
                except OSError as exc:
                    code = exc.errno or errno.EIO
            else:
                code = errno.EEXIST
        if code == errno.EEXIST:
            raise OperationalError(
                f"{where / new} appeared during the restore; delete it or choose another --target"
            )
        raise OperationalError(f"cannot create {where / new}: {os.strerror(code)}")


def remove_tree(directory: int, name: str) -> None:
    """Remove ``name`` in ``directory`` and all in it, as far as it can, through descriptors
    and without following a symlink.  Not ``shutil.rmtree``: it recurses once per level, and
    a day's tree may be 2,048 levels deep (a path of 4,095 bytes).  The directories in each
    of ``name``'s directories are moved up into ``name`` before it goes, so the tree gets
    shallower with every pass and no more than two descriptors are open."""
    try:
        top = os.open(name, _DIR, dir_fd=directory)
    except OSError:
        with suppress(OSError):
            os.unlink(name, dir_fd=directory)
        return
    spare = itertools.count()
    try:
        progress = True
        while progress:
            progress = False
            for sub in _clear(top):
                with suppress(OSError):
                    fd = os.open(sub, _DIR, dir_fd=top)
                    try:
                        for inner in _clear(fd):
                            progress |= _hoist(fd, inner, top, spare)
                    finally:
                        os.close(fd)
                    os.rmdir(sub, dir_fd=top)
                    progress = True
    finally:
        os.close(top)
    with suppress(OSError):
        os.rmdir(name, dir_fd=directory)


def _clear(fd: int) -> list[str]:
    """Unlink everything in directory ``fd`` but directories; their names."""
    dirs = []
    with suppress(OSError), os.scandir(fd) as found:
        for entry in found:
            if entry.is_dir(follow_symlinks=False):
                dirs.append(entry.name)
            else:
                with suppress(OSError):
                    os.unlink(entry.name, dir_fd=fd)
    return dirs


def _hoist(fd: int, name: str, top: int, spare: Iterator[int]) -> bool:
    """Move directory ``name`` from ``fd`` into ``top`` under a name not in use there."""
    while True:
        try:
            os.rename(name, f".{next(spare)}", src_dir_fd=fd, dst_dir_fd=top)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                return False

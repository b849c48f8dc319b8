"""Receiving a chain: its volumes through gpg and the decompressor into ``btrfs receive``.

The full backup is received first, then each incremental, each one's volumes streamed
through gpg, the decompressor and ``btrfs receive`` with both the stored and the raw SHA-256
of every volume checked against the catalog; each volume is fetched (as concurrent ranges,
where the storage is remote) while the one before it is decoded.  Everything is received
into a working directory inside the target (``workdir.py``: private, recorded, reached by
descriptor), and the finished day is put into the target as a read-only snapshot of the last
member, so the target only ever gains a complete subvolume: a failure (or a kill) leaves
nothing there that looks whole, and a failure names the backup and volume that failed.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import IO, BinaryIO

from btrsendd.catalog import Catalog
from btrsendd.errors import BtrsenddError, OperationalError, PipelineError
from btrsendd.interrupt import Interrupted
from btrsendd.layout import Located
from btrsendd.lock import restore_lock
from btrsendd.log import get_logger
from btrsendd.model import Backup, StreamIdentity
from btrsendd.names import is_safe_component
from btrsendd.pipeline import btrfs
from btrsendd.pipeline.codec import Codec, decode_volume
from btrsendd.pipeline.readers import sha256_of
from btrsendd.pipeline.sendstream import StreamChecker, StreamError
from btrsendd.progress import Progress, Total
from btrsendd.storage.base import Storage
from btrsendd.storage.throttle import UNLIMITED, Throttle
from btrsendd.workdir import Target, Workdir, remove_leftovers


def _codec(row: Backup) -> Codec:
    return Codec.stored_as(row.compression, row.recipients)


#: An object opened for reading: what closes it, and the reader.
_Opened = tuple[ExitStack, BinaryIO]


class Readers:
    """The chain's volumes opened for reading one ahead: the next volume's ranges are fetched
    while the current one is decoded.  ``restore --path`` (``fileindex/fetch.py``) reads the
    volumes it needs through one too.

    The storage lends its download buffers to the readers in the order they were opened
    (``storage/ranged.py``), so the next volume fetches into the buffers the current one
    gives back, and memory stays within that one budget.  For the same reason nothing else
    may read the storage while the next volume is open: a failed volume closes it
    (``reading``) before its object is read again.  ``throttle`` paces every byte read.
    """

    def __init__(self, storage: Storage, volumes: Sequence[Located], throttle: Throttle) -> None:
        self.storage = storage
        self.throttle = throttle
        self.volumes = list(volumes)
        #: The volume opened ahead: its index, and its reader or why it could not be opened.
        self._ahead: tuple[int, _Opened | BtrsenddError] | None = None

    def _open(self, index: int) -> _Opened | BtrsenddError:
        vol = self.volumes[index]
        stack = ExitStack()
        try:
            body = stack.enter_context(
                self.storage.open_read(vol.key, vol.version, throttle=self.throttle)
            )
        except BtrsenddError as exc:  # reported when that volume's turn comes
            return exc
        return stack, body

    @contextmanager
    def reading(self, index: int) -> Iterator[BinaryIO]:
        """Volume ``index``'s stored object, the next one opened meanwhile; on failure both
        are closed before the error goes on."""
        if self._ahead is not None and self._ahead[0] == index:
            opened = self._ahead[1]
            self._ahead = None
        else:
            self.close()
            opened = self._open(index)
        if isinstance(opened, BtrsenddError):
            raise opened
        stack, body = opened
        with stack:
            if index + 1 < len(self.volumes):
                self._ahead = (index + 1, self._open(index + 1))
            try:
                yield body
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close the volume opened ahead, if any."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not isinstance(ahead[1], BtrsenddError):
            ahead[1][0].close()


def _stored_sha256(readers: Readers, vol: Located) -> str | None:
    """The SHA-256 of a stored object, read afresh; ``None`` if it cannot be read again.

    Only a failed decode needs it, to tell damage of the stored bytes from trouble with the
    key or gpg: a successful one hashes what it reads anyway, so the common path reads and
    hashes every stored byte once.
    """
    try:
        with readers.storage.open_read(vol.key, vol.version, throttle=readers.throttle) as body:
            return sha256_of(body)
    except (BtrsenddError, OSError):
        return None


def decode_checked(
    readers: Readers,
    index: int,
    out: IO[bytes] | int,
    gnupg_home: Path | None,
    inspect: Callable[[memoryview], None],
) -> None:
    """Decode volume ``index`` of ``readers`` into ``out`` (btrfs receive's stdin), showing
    every decoded chunk to ``inspect`` first, and check both its hashes against the
    catalog's.

    Everything the volume gave is void unless this returns: its hashes are known only at
    its end.  ``restore --path`` (``fileindex/fetch.py``) decodes its volumes through this
    too, so both restores check every stored and raw byte the same way.
    """
    vol = readers.volumes[index]
    expected = vol.volume
    try:
        with readers.reading(index) as body:
            got = decode_volume(
                body,
                _codec(vol.backup),
                out,
                gnupg_home=gnupg_home,
                inspect=inspect,
            )
    except PipelineError as exc:
        # gpg and zstd fail on damaged input before its end, so the decode's own hash of
        # the stored bytes is incomplete: read the object again to know which it was.
        if _stored_sha256(readers, vol) not in (expected.stored_sha256, None):
            raise OperationalError(
                "the stored object is damaged: its SHA-256 differs from the one recorded "
                f"when it was backed up ({exc})"
            ) from None
        if exc.stage == "gpg":
            raise OperationalError(
                f"{exc}; the private key must be in --gnupg-home and usable without a "
                "prompt (unlock a passphrase-protected key in gpg-agent first)"
            ) from None
        raise
    if got.stored_sha256 != expected.stored_sha256:
        raise OperationalError("the stored object's SHA-256 differs from the one recorded")
    if (got.raw_length, got.raw_sha256) != (expected.raw_length, expected.raw_sha256):
        raise OperationalError("the decoded bytes differ from the send stream recorded")


def _receive_backup(
    readers: Readers,
    first: int,
    volumes: Sequence[Located],
    work: Workdir,
    gnupg_home: Path | None,
    progress: Progress,
) -> str:
    """Receive one backup's volumes, from the chain's volume ``first`` on, into ``work``;
    return the new subvolume's name.

    ``progress`` is the whole chain's: each volume is a step of it.

    ``btrfs receive`` is confined to the working directory (``btrfs.Receive``), so whatever
    the stream names, nothing outside it is written.  On failure whatever was received
    stays in ``work``, which the caller removes.
    """
    row = volumes[0].backup
    # The stream was checked when it was stored; it is checked again on its way back, since
    # the bucket it came from may have been written by someone else since.
    checker = StreamChecker(partial(_expect_restored, row))

    def inspect(chunk: memoryview) -> None:
        checker.feed(chunk)
        progress.advance(len(chunk))

    before = set(work.subvolumes())
    with btrfs.Receive(work.fd) as receive:
        current: Located | None = None
        try:
            for index, vol in enumerate(volumes, first):
                current = vol
                progress.next_volume()
                decode_checked(readers, index, receive.stdin, gnupg_home, inspect)
            current = None
            checker.finish()
            receive.finish()
        except BaseException as exc:
            receive.kill()
            where = f"backup {row.id} ({row.date})" if current is None else current.describe()
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                # btrfs receive stopped reading: its own error is the one worth reporting.
                raise OperationalError(f"restore of {where} failed: {receive.failure()}") from None
            if isinstance(exc, OperationalError):
                raise OperationalError(f"restore of {where} failed: {exc}") from None
            raise
    new = set(work.subvolumes()) - before
    if len(new) != 1:
        raise OperationalError(f"btrfs receive of {row.id} created {len(new)} subvolumes")
    return new.pop()


def _expect_restored(row: Backup, found: StreamIdentity) -> None:
    """Refuse a stream that is not the one ``row`` recorded, or that names no plain name.

    Raised from the stream's first command, before ``btrfs receive`` has read it.
    """
    if not is_safe_component(found.name):
        raise StreamError(f"the send stream names its subvolume {found.name!r}, not a plain name")
    recorded = row.stream
    if recorded is None:  # stored before btrsendd recorded streams: check the kind only
        if (found.parent_uuid is None) != (row.kind == "full"):
            raise StreamError(f"the send stream is not a {row.kind} one")
    elif found != recorded:
        raise StreamError(
            f"the send stream is of subvolume {found.name} ({found.uuid}, ctransid "
            f"{found.ctransid}), not the one backed up ({recorded.name}, {recorded.uuid}, "
            f"ctransid {recorded.ctransid})"
        )


def _final_name(row: Backup, received: str) -> str:
    """The name the restored day gets in the target: its snapshot's, as recorded.

    A ``backup-stdin`` backup records no snapshot; then the name its stream gave the
    subvolume is used, if it is a plain name (a hostile stream could name anything).
    """
    if row.snapshot is not None:
        return row.snapshot
    if not is_safe_component(received):
        raise OperationalError(
            f"backup {row.id} names its subvolume {received!r}, which is not a plain name"
        )
    return received


@dataclass(frozen=True)
class Writable:
    """Where ``--writable`` goes: a name in a directory opened when the restore began."""

    directory: Target
    name: str


def receive_chain(
    storage: Storage,
    catalog: Catalog,
    volumes: Sequence[Located],
    target: Target,
    *,
    state_dir: Path,
    gnupg_home: Path | None,
    writable: Writable | None = None,
    throttle: Throttle = UNLIMITED,
) -> Path:
    """Receive every backup of a chain in order; return the restored day's subvolume.

    Members are received into a working directory in the target and each is deleted once
    the next one is in; the last becomes a read-only snapshot in the target (a received
    read-only subvolume cannot be moved to another directory), and with ``writable`` also a
    writable snapshot there.  ``throttle`` paces what is read from storage.
    """
    target_path = target.path
    with restore_lock(state_dir, target.real_path):
        remove_leftovers(target, catalog)
        work = Workdir.create(target, catalog)
        restored: Path | None = None
        try:
            received = _receive_members(storage, volumes, work, gnupg_home, throttle)
            name = _final_name(volumes[-1].backup, received)
            try:
                btrfs.create_snapshot(
                    btrfs.fd_path(work.fd, received), btrfs.fd_path(target.fd, name), read_only=True
                )
            except OSError as exc:
                raise OperationalError(
                    f"cannot create {target_path / name}: {exc.strerror}"
                ) from None
            restored = target_path / name
            if writable is not None:
                # From the subvolume received, by descriptor: the name in the target is in a
                # directory others may write to, and may be their symlink to any subvolume
                # by now.
                try:
                    btrfs.create_snapshot(
                        btrfs.fd_path(work.fd, received),
                        btrfs.fd_path(writable.directory.fd, writable.name),
                    )
                except OSError as exc:
                    raise OperationalError(
                        f"restored to {restored}, but cannot create the writable snapshot "
                        f"{writable.directory.path / writable.name}: {exc.strerror}"
                    ) from None
            return restored
        except OperationalError as exc:
            if restored is not None:
                raise
            raise OperationalError(f"{exc}; nothing was left in {target_path}") from None
        except Interrupted as exc:
            exc.tell(
                f"nothing was left in {target_path}; run the same restore again"
                if restored is None
                else f"the day was restored to {restored}, but nothing after that was done"
            )
            raise
        finally:
            work.remove(catalog)


def _receive_members(
    storage: Storage,
    volumes: Sequence[Located],
    work: Workdir,
    gnupg_home: Path | None,
    throttle: Throttle,
) -> str:
    """Receive each member of the chain into ``work``, deleting the one before once the next
    is in; returns the name of the last one received."""
    newest = volumes[-1].backup
    log = get_logger(source=newest.source)
    previous: str | None = None
    # One progress for the whole chain: its raw bytes are known, so percent and ETA are too.
    with (
        Progress(
            f"{newest.source} {newest.date}",
            log,
            event="restore.progress",
            total=Total(sum(v.volume.raw_length for v in volumes)),
            volumes=len(volumes),
        ) as progress,
        closing(Readers(storage, volumes, throttle)) as readers,
    ):
        first = 0
        for _, group in groupby(volumes, key=lambda v: v.backup.id):
            members = list(group)
            row = members[0].backup
            started = time.monotonic()
            received = _receive_backup(readers, first, members, work, gnupg_home, progress)
            first += len(members)
            log.info(
                "restore.received",
                backup_id=row.id,
                date=row.date.isoformat(),
                bytes=row.raw_bytes,
                duration=round(time.monotonic() - started, 3),
            )
            if previous is not None:
                work.delete_subvolume(previous)
            previous = received
    assert previous is not None
    return previous

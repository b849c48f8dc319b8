"""Restore: resolve a chain, thaw its objects, and receive it onto a btrfs filesystem.

A day is restored by receiving its chain in order: the full backup, then each incremental,
each one's volumes streamed through gpg, the decompressor and ``btrfs receive`` with both the
stored and the raw SHA-256 of every volume checked against the catalog.  Intermediate members
are received into a working directory beside the target and deleted as soon as the next member
is in, so the target ends up holding only the requested day.  Any failure deletes whatever was
received and names the backup and volume that failed: a half-restored tree that looks whole is
the worst outcome a restore can have.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import btrfsutil

from btrsendd.catalog import BackupRow, Catalog
from btrsendd.errors import BtrsenddError, OperationalError, UsageError
from btrsendd.log import get_logger
from btrsendd.pipeline import Codec, Compression, decode_volume
from btrsendd.storage.base import Storage, Tier

WORKDIR_PREFIX = ".btrsendd-restore-"


def resolve_chain(catalog: Catalog, source: str, day: date) -> list[BackupRow]:
    """The chain that restores ``source`` as of ``day``: full first, the wanted backup last.

    The wanted backup is the newest complete one dated on or before ``day``.
    """
    rows = [r for r in catalog.backups(source) if r.date <= day]
    if not rows:
        raise UsageError(f"no complete backup of {source!r} dated on or before {day}")
    by_id = {r.id: r for r in catalog.backups(source)}
    chain = [rows[-1]]
    while chain[-1].parent_id is not None:
        parent = by_id.get(chain[-1].parent_id)
        if parent is None:
            raise OperationalError(
                f"backup {chain[-1].id} needs parent {chain[-1].parent_id}, which the catalog "
                "lacks; run `btrsendd catalog rebuild --force`"
            )
        chain.append(parent)
    chain.reverse()
    return chain


@dataclass(frozen=True)
class Located:
    """A volume with the storage key it lives under."""

    backup: BackupRow
    index: int
    key: str


def volume_keys(
    catalog: Catalog, chain: Sequence[BackupRow], backup_dir: Callable[[BackupRow], str]
) -> list[Located]:
    return [
        Located(row, v.index, f"{backup_dir(row)}/{v.name}")
        for row in chain
        for v in catalog.volumes(row.id)
    ]


def thaw(
    storage: Storage,
    volumes: Sequence[Located],
    *,
    tier: Tier,
    days: int = 7,
    wait: bool = True,
    poll_seconds: float = 60.0,
    timeout: float | None = None,
) -> bool:
    """Make every volume readable: request restores for archived ones, then wait.

    Requests are idempotent on the storage side, so running this again after an interruption
    never pays twice for an object already being restored.  Returns whether all are readable
    (always True when ``wait``).
    """
    log = get_logger()
    pending = []
    for vol in volumes:
        state = storage.thaw_state(vol.key)
        if state == "archived":
            storage.request_thaw(vol.key, tier, days)
            log.info("restore.requested", key=vol.key, tier=tier)
        if state != "readable":
            pending.append(vol)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = min(poll_seconds, 5.0)
    while pending and wait:
        if deadline is not None and time.monotonic() > deadline:
            raise OperationalError(
                f"{len(pending)} object(s) still being restored after {timeout:.0f} s; "
                "run the same restore command again later"
            )
        time.sleep(delay)
        delay = min(delay * 2, poll_seconds)
        pending = [v for v in pending if storage.thaw_state(v.key) != "readable"]
        log.info("restore.waiting", pending=len(pending))
    return not pending


def _codec(row: BackupRow, gnupg_home: Path | None) -> Codec:
    return Codec(
        compression=_compression(row.compression),
        level=1,
        recipients=row.recipients,
        gnupg_home=gnupg_home,
    )


def _compression(name: str) -> Compression:
    if name in ("gzip", "zstd", "none"):
        return name  # type: ignore[return-value]
    raise OperationalError(f"unknown compression {name!r} in the catalog; upgrade btrsendd")


def _subvolumes_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if btrfsutil.is_subvolume(p)}


def _delete_subvolume(path: Path) -> None:
    try:
        btrfsutil.delete_subvolume(path)
    except btrfsutil.BtrfsUtilError:
        # A half-received subvolume can be writable and partially populated; the library call
        # handles both, but if it fails the CLI gets a second chance with the same semantics.
        subprocess.run(["btrfs", "subvolume", "delete", str(path)], capture_output=True)


def receive_backup(
    storage: Storage,
    row: BackupRow,
    volumes: Sequence[Located],
    expected: dict[int, tuple[str, str]],
    dest: Path,
    gnupg_home: Path | None,
) -> Path:
    """Receive one backup's volumes into ``dest``; return the new subvolume's path."""
    before = _subvolumes_in(dest)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["btrfs", "receive", "-e", str(dest)], stdin=subprocess.PIPE, stdout=err, stderr=err
        )
        assert proc.stdin is not None
        current = -1
        try:
            for vol in volumes:
                current = vol.index
                with storage.open_read(vol.key) as body:
                    got = decode_volume(body, _codec(row, gnupg_home), proc.stdin.fileno())
                stored_sha, raw_sha = expected[vol.index]
                if got.stored_sha256 != stored_sha:
                    raise OperationalError("stored bytes do not match their recorded SHA-256")
                if got.raw_sha256 != raw_sha:
                    raise OperationalError("decoded bytes do not match their recorded SHA-256")
            proc.stdin.close()
            if proc.wait() != 0:
                err.seek(0)
                detail = err.read().decode(errors="replace").strip().splitlines()
                raise OperationalError(f"btrfs receive failed: {' '.join(detail[-3:])}")
        except BaseException as exc:
            proc.kill()
            proc.wait()
            for name in _subvolumes_in(dest) - before:
                _delete_subvolume(dest / name)
            if isinstance(exc, BtrsenddError):
                where = f"backup {row.id} ({row.date})"
                if current >= 0:
                    where += f", volume {current}"
                raise OperationalError(f"restore of {where} failed: {exc}") from None
            raise
    new = _subvolumes_in(dest) - before
    if len(new) != 1:
        raise OperationalError(f"btrfs receive of {row.id} created {len(new)} subvolumes")
    return dest / new.pop()


def receive_chain(
    catalog: Catalog,
    storage: Storage,
    chain: Sequence[BackupRow],
    backup_dir: Callable[[BackupRow], str],
    target: Path,
    *,
    gnupg_home: Path | None = None,
) -> Path:
    """Receive ``chain`` in order; ``target`` ends up holding only the last member."""
    if not target.is_dir():
        raise UsageError(f"restore target {target} is not a directory; create it first")
    log = get_logger(source=chain[-1].source)
    work = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=target))
    previous: Path | None = None
    try:
        for position, row in enumerate(chain):
            last = position == len(chain) - 1
            vols = [v for v in volume_keys(catalog, [row], backup_dir)]
            expected = {v.index: (v.stored_sha256, v.raw_sha256) for v in catalog.volumes(row.id)}
            started = time.monotonic()
            received = receive_backup(
                storage, row, vols, expected, target if last else work, gnupg_home
            )
            log.info(
                "restore.received",
                backup_id=row.id,
                date=row.date.isoformat(),
                bytes=row.raw_bytes,
                duration=round(time.monotonic() - started, 3),
            )
            if previous is not None:
                _delete_subvolume(previous)
            previous = received
        assert previous is not None
        return previous
    finally:
        for leftover in _subvolumes_in(work):
            _delete_subvolume(work / leftover)
        shutil.rmtree(work, ignore_errors=True)


def writable_copy(subvolume: Path, path: Path) -> None:
    """A writable snapshot of a restored (read-only, received) subvolume."""
    try:
        btrfsutil.create_snapshot(subvolume, path)
    except btrfsutil.BtrfsUtilError as exc:
        raise OperationalError(f"cannot create writable snapshot {path}: {exc}") from None

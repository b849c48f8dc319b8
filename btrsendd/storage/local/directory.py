"""A directory as object storage: the embedded default for demos, tests and NAS targets.

Objects are plain files at ``<path>/<key>``, so an archive can be inspected, copied with
rsync or moved to a bucket with ordinary tools.  Every write goes to a temporary file in the
target's directory and is renamed into place after ``fsync``: a crash or a full disk can leave
a temporary file behind but never a truncated object under a final name, which matters because
a manifest's presence is what marks a backup complete.

The archive may be writable by others (a NAS share, a group's directory), and btrsendd runs
as root, so nothing in it is followed: below the configured path every directory is opened
with ``O_NOFOLLOW`` from its parent's descriptor, and every object the same way.  A symlink
there once made ``verify --clean`` and expiry delete every file of the directory it pointed
to.  Only regular files are objects: a symlink, a FIFO (whose reading never ends) or a
device in the archive is listed as nothing and read as an error.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from btrsendd.errors import StorageError
from btrsendd.storage.base import FreeCheck, Lock, ObjectInfo, Readable, Stored
from btrsendd.storage.common import READ_CHUNK, check_key, refuse_lock
from btrsendd.storage.throttle import UNLIMITED, Throttle

#: The class the catalog records for volumes stored here (priced at nothing).
STORAGE_CLASS = "local"

#: Temporary files start with this; ``list()`` skips them, so a write interrupted by a crash
#: is invisible (and recognisable for cleanup by hand).
TEMP_PREFIX = ".tmp-"

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)

#: A directory below the archive's root: never through a symlink.
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: What opening a directory or an object gives when something else stands in its place.
_NOT_FOLLOWED = (errno.ELOOP, errno.ENOTDIR)


def _os_error(action: str, path: Path, exc: OSError) -> StorageError:
    """A one-line message naming the path; a full disk is said in so many words."""
    if exc.errno in _FULL_DISK:
        return StorageError(f"cannot {action} {path}: the disk is full ({exc.strerror})")
    if exc.errno in _NOT_FOLLOWED:
        return StorageError(
            f"cannot {action} {path}: a symlink or a file stands where btrsendd keeps a "
            "directory or an object (it follows no symlink inside its archive); move it away"
        )
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


def _chunks(stream: Readable) -> Iterator[memoryview | bytes]:
    """``stream`` in pieces of up to ``READ_CHUNK`` bytes, each valid until the next.

    A stream with ``readinto`` (the pipeline's output, files) is read into one reused
    buffer: a volume then costs no allocation per chunk, where ``read`` makes a new object
    every time.
    """
    readinto = getattr(stream, "readinto", None)
    if readinto is None:
        while chunk := stream.read(READ_CHUNK):
            yield chunk
        return
    view = memoryview(bytearray(READ_CHUNK))
    while count := readinto(view):
        yield view[:count]


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable: file fsync alone does not cover it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _split(key: str) -> tuple[list[str], str]:
    """A key's directories and its last segment."""
    *directories, name = check_key(key).split("/")
    return directories, name


#: Deeper than any key btrsendd writes (its prefix, source, backup id and name) goes: what
#: lies further down is someone else's, and is not walked.
_MAX_DEPTH = 64


def _entered(fd: int, key: str) -> tuple[str, int, list[str]]:
    """A level of ``_walk``: the directory open at ``fd`` (closed here if it cannot be read)."""
    try:
        with os.scandir(fd) as entries:
            return key, fd, [entry.name for entry in entries]
    except BaseException:
        os.close(fd)
        raise


def _walk(root: Path, top: int, base: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry but directories below the open directory ``top``, keyed from ``base``,
    with its ``lstat``.

    Directories are entered from their parent's descriptor and never through a symlink.
    Iterative, holding one descriptor per level and at most ``_MAX_DEPTH`` levels: a tree
    nested thousands deep (anyone writing to the archive can make one) neither exhausts
    Python's stack nor the open files.
    """
    stack: list[tuple[str, int, list[str]]] = []
    key = base
    try:
        stack.append(_entered(os.dup(top), base))
        while stack:
            path, fd, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            name = names.pop()
            key = f"{path}/{name}" if path else name
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode):
                    yield key, info
                elif len(stack) < _MAX_DEPTH:
                    stack.append(_entered(os.open(name, _DIRECTORY, dir_fd=fd), key))
            except FileNotFoundError:
                continue  # deleted while we listed
            except OSError as exc:
                if exc.errno not in _NOT_FOLLOWED:
                    raise
                # replaced by a symlink or a file while we listed: not ours to enter
    except OSError as exc:
        raise _os_error("list", root / key, exc) from exc
    finally:
        for _, fd, _ in stack:
            os.close(fd)


class LocalStorage:
    """The ``Storage`` protocol over a directory tree (files 0600, directories 0700).

    Files are always readable, so it has no thaw states (``base.Thawing``); leftovers of
    interrupted writes are its unfinished uploads (``base.IncompleteUploads``).
    """

    storage_class = STORAGE_CLASS
    #: Reading a file again costs nothing but time, so verify re-hashes every volume.
    free_check: FreeCheck = "rehash"
    #: Files: everything reads back at once.
    has_readable_class = True

    def __init__(self, path: Path, throttle: Throttle = UNLIMITED) -> None:
        self.root = path
        self.description = f"local directory {path}"
        #: Paces every byte written (``pipeline.rate_limit``): a NAS share is a link too.
        self.throttle = throttle

    def _path(self, key: str) -> Path:
        """For messages: where ``key`` is (reached by descriptors, never by this path)."""
        return self.root / check_key(key)

    def _make_root(self) -> None:
        """Create the configured directory and missing parents as 0700, each made durable.

        Backups are private data: the mode is set here rather than trusting the umask.  The
        configured path is the admin's, so it is followed like any path they write.
        """
        missing: list[Path] = []
        directory = self.root
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):
                new.mkdir(mode=0o700)
            _fsync_dir(new.parent)

    @contextlib.contextmanager
    def _directories(self, parts: Sequence[str], *, create: bool = False) -> Iterator[list[int]]:
        """Descriptors of the root and of each directory ``parts`` names below it, in order.

        Each is opened from its parent's descriptor without following a symlink; with
        ``create`` missing ones are made (0700, durably).  Without ``create``, a missing
        directory (or a symlink or file in its place) yields an empty list: no object of
        btrsendd's can be under it.
        """
        fds: list[int] = []
        try:
            if create:
                self._make_root()
            try:
                fds.append(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                for part in parts:
                    if create:
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(part, 0o700, dir_fd=fds[-1])
                            os.fsync(fds[-1])
                    fds.append(os.open(part, _DIRECTORY, dir_fd=fds[-1]))
            except OSError as exc:
                if create or not (isinstance(exc, FileNotFoundError) or exc.errno in _NOT_FOLLOWED):
                    raise
                fds, missing = [], fds
                for fd in missing:
                    os.close(fd)
            yield fds
        finally:
            for fd in fds:
                os.close(fd)

    def put_stream(
        self, key: str, stream: Readable, lock: Lock | None = None, *, readable: bool = False
    ) -> Stored:
        refuse_lock(lock, self.description)
        target = self._path(key)
        parts, name = _split(key)
        try:
            with self._directories(parts, create=True) as fds:
                # _write turns its own OSErrors into StorageError: those left are the path's.
                return self._write(fds[-1], name, stream, target)
        except OSError as exc:
            raise _os_error("create the directory for", target, exc) from exc

    def _write(self, directory: int, name: str, stream: Readable, target: Path) -> Stored:
        temp = f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
        written = 0
        try:
            fd = os.open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=directory,
            )
            with open(fd, "wb") as out:
                for chunk in _chunks(stream):
                    self.throttle.write(out.write, chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
            os.fsync(directory)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory)
            if isinstance(exc, OSError):
                raise _os_error("write", target, exc) from exc
            if isinstance(exc, Exception):
                raise StorageError(f"writing {target} aborted: {exc}") from exc
            raise
        # No checksum of its own: verify re-hashes files, which costs nothing but time.
        return Stored(written)

    def put_bytes(self, key: str, data: bytes, lock: Lock | None = None) -> Stored:
        return self.put_stream(key, io.BytesIO(data), lock)

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        with self.open_read(key) as f:
            try:
                return f.read()
            except OSError as exc:
                raise _os_error("read", self._path(key), exc) from exc

    @contextlib.contextmanager
    def open_read(
        self, key: str, version: str | None = None, *, throttle: Throttle = UNLIMITED
    ) -> Iterator[BinaryIO]:
        path = self._path(key)
        parts, name = _split(key)
        with self._directories(parts) as fds:
            try:
                if not fds:
                    raise FileNotFoundError(errno.ENOENT, "missing")
                # O_NONBLOCK: opening a FIFO waits for a writer, which may never come.
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fds[-1]
                )
            except FileNotFoundError:
                raise StorageError(f"no object {key!r} in {self.root}") from None
            except OSError as exc:
                raise _os_error("open", path, exc) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError(
                f"cannot read {path}: it is not a regular file, so not an object btrsendd wrote"
            )
        with open(fd, "rb") as f:
            if not throttle.limited:
                yield f
                return
            with io.BufferedReader(cast(io.RawIOBase, throttle.reader(f))) as paced:
                yield paced

    def _files(self, prefix: str) -> list[tuple[str, int]]:
        """Every regular file whose key starts with ``prefix``, temporary ones included, by
        key, with its size."""
        # Walk only the deepest directory the prefix names; S3 prefixes may end mid-name
        # ("host1/home/2024"), so the last segment is a filter, not a directory.
        directory, _, _ = prefix.rpartition("/")
        parts = directory.split("/") if directory else []
        found = []
        with self._directories(parts) as fds:
            if not fds:
                return []
            for key, info in _walk(self.root, fds[-1], directory):
                if stat.S_ISREG(info.st_mode) and key.startswith(prefix):
                    found.append((key, info.st_size))
        # S3 lists in key order; callers may rely on it (volumes in sequence).
        return sorted(found)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return iter(
            ObjectInfo(key, size)
            for key, size in self._files(prefix)
            if not key.rpartition("/")[2].startswith(TEMP_PREFIX)
        )

    def incomplete_uploads(self, prefix: str) -> Sequence[str]:
        """Temporary files under ``prefix``: writes a crash (or kill -9) cut short.

        A write in progress has one too, so callers ask only where none can be running.
        """
        return [
            key for key, _ in self._files(prefix) if key.rpartition("/")[2].startswith(TEMP_PREFIX)
        ]

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Delete the temporary files under ``prefix``; returns how many there were."""
        leftovers = self.incomplete_uploads(prefix)
        self.delete(leftovers)
        return len(leftovers)

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            parts, name = _split(key)
            with self._directories(parts) as fds:
                if not fds:
                    continue  # its directory is gone (or is not ours): so is the object
                try:
                    os.unlink(name, dir_fd=fds[-1])
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise _os_error("delete", self._path(key), exc) from exc
                # Drop directories the deletion emptied (an expired backup's), up to the root.
                for parent, part in zip(reversed(fds[:-1]), reversed(parts), strict=True):
                    try:
                        os.rmdir(part, dir_fd=parent)
                    except OSError:
                        break

    def checksum(self, key: str, version: str | None = None) -> str | None:
        """None: a file keeps no checksum, and re-hashing it (what verify does) is free."""
        return None

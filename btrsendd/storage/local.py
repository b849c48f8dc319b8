"""A directory as object storage: the embedded default for demos, tests and NAS targets.

Objects are plain files at ``<path>/<key>``, so an archive can be inspected, copied with
rsync or moved to a bucket with ordinary tools.  Every write goes to a temporary file in the
target's directory and is renamed into place after ``fsync``: a crash or a full disk can leave
a temporary file behind but never a truncated object under a final name, which matters because
a manifest's presence is what marks a backup complete.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from btrsendd.errors import StorageError
from btrsendd.storage.base import ObjectInfo, Readable, Stored, ThawState, Tier
from btrsendd.storage.common import READ_CHUNK, check_key

#: Temporary files start with this; ``list()`` skips them, so a write interrupted by a crash
#: is invisible (and recognisable for cleanup by hand).
TEMP_PREFIX = ".tmp-"

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _os_error(action: str, path: Path, exc: OSError) -> StorageError:
    """A one-line message naming the path; a full disk is said in so many words."""
    if exc.errno in _FULL_DISK:
        return StorageError(f"cannot {action} {path}: the disk is full ({exc.strerror})")
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


class LocalStorage:
    """The ``Storage`` protocol over a directory tree (files 0600, directories 0700)."""

    def __init__(self, path: Path) -> None:
        self.root = path
        self.description = f"local directory {path}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents as 0700, each new entry made durable.

        Backups are private data: the mode is set here rather than trusting the umask.
        """
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):
                new.mkdir(mode=0o700)
            _fsync_dir(new.parent)

    def put_stream(self, key: str, stream: Readable) -> Stored:
        target = self._path(key)
        try:
            self._make_dirs(target.parent)
        except OSError as exc:
            raise _os_error("create the directory for", target, exc) from exc
        temp = target.with_name(f"{TEMP_PREFIX}{target.name}-{secrets.token_hex(4)}")
        written = 0
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as out:
                for chunk in _chunks(stream):
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
            _fsync_dir(target.parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _os_error("write", target, exc) from exc
            if isinstance(exc, Exception):
                raise StorageError(f"writing {target} aborted: {exc}") from exc
            raise
        # No checksum of its own: verify re-hashes files, which costs nothing but time.
        return Stored(written)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data))

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            try:
                return f.read()
            except OSError as exc:
                raise _os_error("read", self._path(key), exc) from exc

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise StorageError(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise _os_error("open", path, exc) from exc
        with f:
            yield f

    def _files(self, prefix: str) -> list[tuple[str, Path]]:
        """Every file whose key starts with ``prefix``, temporary ones included, by key."""
        # Walk only the deepest directory the prefix names; S3 prefixes may end mid-name
        # ("host1/home/2024"), so the last segment is a filter, not a directory.
        directory, _, _ = prefix.rpartition("/")
        top = self._path(directory) if directory else self.root

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                raise _os_error("list", Path(exc.filename or top), exc) from exc

        found = []
        for dirpath, _dirs, files in os.walk(top, onerror=fail):
            for name in files:
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append((key, path))
        # S3 lists in key order; callers may rely on it (volumes in sequence).
        return sorted(found)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        found: list[ObjectInfo] = []
        for key, path in self._files(prefix):
            if path.name.startswith(TEMP_PREFIX):
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue  # deleted while we listed
            except OSError as exc:
                raise _os_error("list", path, exc) from exc
            found.append(ObjectInfo(key, size))
        return iter(found)

    def incomplete_uploads(self, prefix: str) -> Sequence[str]:
        """Temporary files under ``prefix``: writes a crash (or kill -9) cut short.

        A write in progress has one too, so callers ask only where none can be running.
        """
        return [key for key, path in self._files(prefix) if path.name.startswith(TEMP_PREFIX)]

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Delete the temporary files under ``prefix``; returns how many there were."""
        leftovers = self.incomplete_uploads(prefix)
        self.delete(leftovers)
        return len(leftovers)

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise _os_error("delete", path, exc) from exc
            # Drop directories the deletion emptied (an expired backup's), up to the root.
            parent = path.parent
            while parent != self.root and parent.is_relative_to(self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def thaw_state(self, key: str) -> ThawState:
        return "readable"

    def checksum(self, key: str) -> str | None:
        """None: a file keeps no checksum, and re-hashing it (what verify does) is free."""
        return None

    def request_thaw(self, key: str, tier: Tier, days: int) -> None:
        """Nothing to do: files are always readable."""

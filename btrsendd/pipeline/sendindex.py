"""A backup's file index, written from its send stream as the stream passes.

``StreamIndexer`` is fed the same chunks as the ``StreamChecker`` (which checks framing and
checksums first, so what reaches the indexer is a stream the checker has accepted so far) and
writes one file-index record (``fileindex/records.py``) per command: the command's attributes,
with a data payload replaced by where it lies in the raw stream.  Nothing is kept but the
command being read: a command lying wholly in a chunk (most do) is read where it lies, one that
straddles chunks is gathered first, and btrfs never writes one larger than its send buffer
(64 KiB in version 1, 144 KiB in version 2), which ``btrfs receive`` refuses too.

The attributes of each command are those btrfs-progs' ``receive`` reads
(``common/send-stream.c``); integers are little-endian, times are a u64 of seconds and a u32
of nanoseconds.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import IO

from btrsendd.fileindex import records as r
from btrsendd.pipeline.readers import CHUNK
from btrsendd.pipeline.sendstream import (
    COMMAND_HEADER,
    END,
    SNAPSHOT,
    STREAM_HEADER,
    SUBVOL,
    StreamError,
    command_name,
)
from btrsendd.storage.base import Readable

#: The largest command btrsendd indexes: far above btrfs's send buffers (see the docstring),
#: so that only a damaged or hostile length can reach it.
COMMAND_MAX = 4 * 1024 * 1024

_COMMAND = struct.Struct("<IHI")
_ATTR = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TIMESPEC = struct.Struct("<qI")

# Attribute types (``BTRFS_SEND_A_*``).
(UUID, CTRANSID, INO, SIZE, MODE, UID, GID, RDEV, CTIME, MTIME, ATIME, OTIME, XATTR_NAME,
 XATTR_DATA, PATH, PATH_TO, PATH_LINK, FILE_OFFSET, DATA, CLONE_UUID, CLONE_CTRANSID,
 CLONE_PATH, CLONE_OFFSET, CLONE_LEN, FALLOCATE_MODE, FILEATTR, UNENCODED_FILE_LEN,
 UNENCODED_LEN, UNENCODED_OFFSET, COMPRESSION, ENCRYPTION) = range(1, 32)  # fmt: skip

# Command numbers (``BTRFS_SEND_C_*``) past SNAPSHOT.
(MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK, RENAME, LINK, UNLINK, RMDIR, SET_XATTR,
 REMOVE_XATTR, WRITE, CLONE, TRUNCATE, CHMOD, CHOWN, UTIMES, _END, UPDATE_EXTENT, FALLOCATE,
 FILEATTR_CMD, ENCODED_WRITE, ENABLE_VERITY) = range(3, 27)  # fmt: skip


class _Attrs:
    """One command's attributes: where each value lies in the buffer it was read from.

    Values are sliced only when asked for, so a WRITE's data is never copied: only its place
    (``data_at``) is wanted.
    """

    def __init__(self, view: memoryview, start: int, stop: int, version: int, where: str):
        self.view = view
        self.where = where
        self.found: dict[int, tuple[int, int]] = {}
        pos = start
        while pos < stop:
            if stop - pos < 2:
                raise StreamError(f"{where} ends inside an attribute (damaged?)")
            (kind,) = _U16.unpack_from(view, pos)
            if version >= 2 and kind == DATA:
                self.found[kind] = (pos + 2, stop - pos - 2)
                break
            if stop - pos < 4:
                raise StreamError(f"{where} ends inside an attribute (damaged?)")
            kind, length = _ATTR.unpack_from(view, pos)
            pos += 4
            if length > stop - pos:
                raise StreamError(f"{where} has an attribute running past its end (damaged?)")
            self.found[kind] = (pos, length)
            pos += length

    def value_at(self, kind: int) -> tuple[int, int]:
        found = self.found.get(kind)
        if found is None:
            raise StreamError(f"{self.where} lacks the attribute {kind} btrfs receive needs")
        return found

    def raw(self, kind: int) -> bytes:
        start, length = self.value_at(kind)
        return bytes(self.view[start : start + length])

    def path(self, kind: int = PATH) -> str:
        return os.fsdecode(self.raw(kind))

    def number(self, kind: int, default: int | None = None) -> int:
        if default is not None and kind not in self.found:
            return default
        start, length = self.value_at(kind)
        if length == 8:
            return int(_U64.unpack_from(self.view, start)[0])
        if length == 4:
            return int(_U32.unpack_from(self.view, start)[0])
        raise StreamError(f"{self.where}: attribute {kind} has {length} bytes, not 4 or 8")

    def time_ns(self, kind: int) -> int:
        start, length = self.value_at(kind)
        if length != _TIMESPEC.size:
            raise StreamError(f"{self.where}: a time of {length} bytes, not {_TIMESPEC.size}")
        seconds, nanoseconds = _TIMESPEC.unpack_from(self.view, start)
        return int(seconds) * 1_000_000_000 + int(nanoseconds)


#: Each command's record, from its attributes and the absolute offset of the payload's
#: first byte (for where data lies).
_Reader = Callable[[_Attrs, int], r.Record]


def _data_at(a: _Attrs, payload_offset: int) -> tuple[int, int]:
    start, length = a.value_at(DATA)
    return payload_offset + start, length


def _write(a: _Attrs, payload_offset: int) -> r.Record:
    at, length = _data_at(a, payload_offset)
    return r.Write(a.path(), a.number(FILE_OFFSET), length, at)


def _encoded_write(a: _Attrs, payload_offset: int) -> r.Record:
    at, length = _data_at(a, payload_offset)
    return r.EncodedWrite(
        a.path(),
        a.number(FILE_OFFSET),
        a.number(UNENCODED_FILE_LEN),
        a.number(UNENCODED_LEN),
        a.number(UNENCODED_OFFSET),
        a.number(COMPRESSION, 0),
        a.number(ENCRYPTION, 0),
        length,
        at,
    )


_READERS: dict[int, _Reader] = {
    MKFILE: lambda a, _: r.Mkfile(a.path()),
    MKDIR: lambda a, _: r.Mkdir(a.path()),
    MKNOD: lambda a, _: r.Mknod(a.path(), a.number(MODE), a.number(RDEV)),
    MKFIFO: lambda a, _: r.Mknod(a.path(), a.number(MODE), a.number(RDEV, 0)),
    MKSOCK: lambda a, _: r.Mknod(a.path(), a.number(MODE), a.number(RDEV, 0)),
    SYMLINK: lambda a, _: r.Symlink(a.path(), a.path(PATH_LINK)),
    RENAME: lambda a, _: r.Rename(a.path(), a.path(PATH_TO)),
    LINK: lambda a, _: r.Link(a.path(), a.path(PATH_LINK)),
    UNLINK: lambda a, _: r.Unlink(a.path()),
    RMDIR: lambda a, _: r.Rmdir(a.path()),
    SET_XATTR: lambda a, _: r.SetXattr(a.path(), a.raw(XATTR_NAME), a.raw(XATTR_DATA)),
    REMOVE_XATTR: lambda a, _: r.RemoveXattr(a.path(), a.raw(XATTR_NAME)),
    WRITE: _write,
    CLONE: lambda a, _: r.Clone(
        a.path(),
        a.number(FILE_OFFSET),
        a.number(CLONE_LEN),
        a.path(CLONE_PATH),
        a.number(CLONE_OFFSET),
        a.raw(CLONE_UUID).hex(),
        a.number(CLONE_CTRANSID),
    ),
    TRUNCATE: lambda a, _: r.Truncate(a.path(), a.number(SIZE)),
    CHMOD: lambda a, _: r.Chmod(a.path(), a.number(MODE)),
    CHOWN: lambda a, _: r.Chown(a.path(), a.number(UID), a.number(GID)),
    UTIMES: lambda a, _: r.Utimes(a.path(), a.time_ns(ATIME), a.time_ns(MTIME), a.time_ns(CTIME)),
    UPDATE_EXTENT: lambda a, _: r.UpdateExtent(a.path(), a.number(FILE_OFFSET), a.number(SIZE)),
    FALLOCATE: lambda a, _: r.Fallocate(
        a.path(), a.number(FALLOCATE_MODE), a.number(FILE_OFFSET), a.number(SIZE)
    ),
    FILEATTR_CMD: lambda a, _: r.Fileattr(a.path(), a.number(FILEATTR)),
    ENCODED_WRITE: _encoded_write,
    ENABLE_VERITY: lambda a, _: r.EnableVerity(a.path()),
}


class StreamIndexer:
    """Writes the file index of a send stream fed to it in chunks of any size into ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._writer: r.IndexWriter | None = None
        #: Stream bytes fed so far: the offset of the next byte.
        self._size = 0
        self._version = 0
        #: A stream header or a command being gathered across chunks.
        self._pending = bytearray()
        self._ended = False

    def feed(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        if self._version == 0:
            pos = self._header(view)
        while pos < end:
            if self._ended:
                raise StreamError(f"the send stream goes on after its END, at byte {self._at(pos)}")
            if self._pending:
                pos = self._gather(view, pos)
                continue
            if end - pos < COMMAND_HEADER:
                self._pending += view[pos:end]
                break
            length = self._length(view, pos)
            if end - pos < COMMAND_HEADER + length:
                self._pending += view[pos:end]
                break
            self._command(view, pos, self._at(pos))
            pos += COMMAND_HEADER + length
        self._size += end

    def finish(self) -> None:
        """Write the end record; ``StreamError`` unless the stream ended with its END."""
        if not self._ended or self._writer is None:
            raise StreamError(f"the send stream ends at byte {self._size} without its END")
        self._writer.end(self._size)

    def _at(self, pos: int) -> int:
        return self._size + pos

    def _header(self, view: memoryview) -> int:
        take = min(STREAM_HEADER - len(self._pending), len(view))
        self._pending += view[:take]
        if len(self._pending) == STREAM_HEADER:
            (self._version,) = _U32.unpack_from(self._pending, STREAM_HEADER - 4)
            self._pending = bytearray()
        return take

    def _length(self, view: memoryview | bytearray, pos: int) -> int:
        (length,) = _U32.unpack_from(view, pos)
        if length > COMMAND_MAX:
            raise StreamError(
                f"the send stream's command at byte {self._at(pos)} claims {length} bytes, "
                f"more than btrfs send writes (damaged?)"
            )
        return int(length)

    def _gather(self, view: memoryview, pos: int) -> int:
        """Add to the command straddling chunks; index it once whole.  Returns the new pos."""
        pending = self._pending
        while True:
            want = COMMAND_HEADER
            if len(pending) >= COMMAND_HEADER:
                want += self._length(pending, 0)
                if len(pending) == want:
                    self._pending = bytearray()
                    self._command(memoryview(pending), 0, self._at(pos) - len(pending))
                    return pos
            take = min(want - len(pending), len(view) - pos)
            if take == 0:
                return pos
            pending += view[pos : pos + take]
            pos += take

    def _command(self, view: memoryview, pos: int, at: int) -> None:
        """Index the whole command at ``view[pos:]``, which begins at stream byte ``at``."""
        length, command, _ = _COMMAND.unpack_from(view, pos)
        start = pos + COMMAND_HEADER
        where = f"the send stream's {command_name(command)} command at byte {at}"
        attrs = _Attrs(view, start, start + length, self._version, where)
        if command in (SUBVOL, SNAPSHOT):
            self._begin(command, attrs)
            return
        if command == END:
            self._ended = True
            return
        reader = _READERS.get(command)
        if reader is None or self._writer is None:
            raise StreamError(f"{where} is not one a file index can hold")
        self._writer.write(reader(attrs, at + COMMAND_HEADER - start))

    def _begin(self, command: int, attrs: _Attrs) -> None:
        parent = attrs.raw(CLONE_UUID).hex() if command == SNAPSHOT else None
        header = r.Header(self._version, attrs.path(), attrs.raw(UUID).hex(), parent)
        self._writer = r.IndexWriter(self._out, header)


def index_stream(stream: Readable, out: IO[bytes]) -> None:
    """Write the file index of the whole send stream ``stream`` into ``out``."""
    indexer = StreamIndexer(out)
    while chunk := stream.read(CHUNK):
        indexer.feed(chunk)
    indexer.finish()

"""The file index's stored form: the send stream's own commands, without their data.

Before compression and encryption (as the volumes are), an index is (``wire.py`` has the
numbers):

* ``MAGIC`` and a u32 format version;
* the send stream's header (its magic and version), as it was;
* the stream's commands as they were, except that a write's ``DATA`` is replaced by
  ``A_DATA_REF`` (where it lies, and its length) and checksums are 0;
* its ``END``, then ``C_INDEX_END`` with the raw stream's size: an index without it is cut.

Copying the commands is what makes writing an index cheap enough to do on every backup
(``pipeline/sendindex.py``); reading decodes them into ``records``.  Reading is strict: an
index comes back from storage others may write to, and a malformed one raises
``FileIndexError`` (one line, saying where), never anything else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO

from btrsendd.fileindex import wire as w
from btrsendd.fileindex.records import (
    Chmod,
    Chown,
    Clone,
    EnableVerity,
    EncodedWrite,
    Fallocate,
    Fileattr,
    FileIndexError,
    Header,
    Index,
    Link,
    Mkdir,
    Mkfile,
    Mknod,
    Record,
    RemoveXattr,
    Rename,
    Rmdir,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    UpdateExtent,
    Utimes,
    Write,
)  # fmt: skip

MAGIC = b"btrsendd-file-index\0"
VERSION = 1
STREAM_MAGIC = b"btrfs-stream\0"
#: The largest command an index holds: a path and a 64 KiB xattr value fit many times over.
COMMAND_MAX = 1024 * 1024

# How each field is stored: "p" a path, "n" a u64, "n0" a u64 that may be absent (0), "b"
# bytes, "t" a time, "u" a UUID (hex in the record), "ref" the data reference, which holds
# two fields (``stream_offset``, ``length``).
_PATH = ("path", w.PATH, "p")
_Layout = tuple[tuple[str, int, str], ...]
_LAYOUTS: dict[type[Record], tuple[int, _Layout]] = {
    Mkfile: (w.MKFILE, (_PATH,)),
    Mkdir: (w.MKDIR, (_PATH,)),
    Mknod: (w.MKNOD, (_PATH, ("mode", w.MODE, "n"), ("rdev", w.RDEV, "n"))),
    Symlink: (w.SYMLINK, (_PATH, ("target", w.PATH_LINK, "p"))),
    Rename: (w.RENAME, (_PATH, ("to", w.PATH_TO, "p"))),
    Link: (w.LINK, (_PATH, ("target", w.PATH_LINK, "p"))),
    Unlink: (w.UNLINK, (_PATH,)),
    Rmdir: (w.RMDIR, (_PATH,)),
    SetXattr: (w.SET_XATTR, (_PATH, ("name", w.XATTR_NAME, "b"), ("value", w.XATTR_DATA, "b"))),
    RemoveXattr: (w.REMOVE_XATTR, (_PATH, ("name", w.XATTR_NAME, "b"))),
    Write: (w.WRITE, (_PATH, ("offset", w.FILE_OFFSET, "n"), ("", w.A_DATA_REF, "ref"))),
    Clone: (w.CLONE, (
        _PATH, ("offset", w.FILE_OFFSET, "n"), ("length", w.CLONE_LEN, "n"),
        ("source_path", w.CLONE_PATH, "p"), ("source_offset", w.CLONE_OFFSET, "n"),
        ("source_uuid", w.CLONE_UUID, "u"), ("source_ctransid", w.CLONE_CTRANSID, "n"),
    )),
    EncodedWrite: (w.ENCODED_WRITE, (
        _PATH, ("offset", w.FILE_OFFSET, "n"),
        ("unencoded_file_length", w.UNENCODED_FILE_LEN, "n"),
        ("unencoded_length", w.UNENCODED_LEN, "n"),
        ("unencoded_offset", w.UNENCODED_OFFSET, "n"),
        ("compression", w.COMPRESSION, "n0"), ("encryption", w.ENCRYPTION, "n0"),
        ("", w.A_DATA_REF, "ref"),
    )),
    Truncate: (w.TRUNCATE, (_PATH, ("size", w.SIZE, "n"))),
    Fallocate: (w.FALLOCATE, (
        _PATH, ("mode", w.FALLOCATE_MODE, "n"), ("offset", w.FILE_OFFSET, "n"),
        ("length", w.SIZE, "n"),
    )),
    Chmod: (w.CHMOD, (_PATH, ("mode", w.MODE, "n"))),
    Chown: (w.CHOWN, (_PATH, ("uid", w.UID, "n"), ("gid", w.GID, "n"))),
    Utimes: (w.UTIMES, (
        _PATH, ("atime_ns", w.ATIME, "t"), ("mtime_ns", w.MTIME, "t"), ("ctime_ns", w.CTIME, "t"),
    )),
    Fileattr: (w.FILEATTR_CMD, (_PATH, ("attr", w.FILEATTR, "n"))),
    UpdateExtent: (w.UPDATE_EXTENT, (
        _PATH, ("offset", w.FILE_OFFSET, "n"), ("length", w.SIZE, "n"),
    )),
    EnableVerity: (w.ENABLE_VERITY, (_PATH,)),
}  # fmt: skip
#: Commands by number: btrfs sends fifos and sockets as their own commands, with a mode that
#: says what they are, which is all ``Mknod`` needs.
_BY_COMMAND: dict[int, tuple[type[Record], _Layout]] = {
    number: (kind, layout) for kind, (number, layout) in _LAYOUTS.items()
}
_BY_COMMAND[w.MKFIFO] = _BY_COMMAND[w.MKSOCK] = (Mknod, _LAYOUTS[Mknod][1])


def _encode(value: object, how: str, record: Record) -> bytes:
    if how == "p":
        return os.fsencode(value)  # type: ignore[arg-type]
    if how in ("n", "n0"):
        return w.U64.pack(value)
    if how == "t":
        assert isinstance(value, int)
        return w.TIMESPEC.pack(*divmod(value, 1_000_000_000))
    if how == "u":
        return bytes.fromhex(value)  # type: ignore[arg-type]
    if how == "ref":
        return w.DATA_REF.pack(record.stream_offset, record.length)  # type: ignore[attr-defined]
    assert isinstance(value, bytes)
    return value


def _decode(attrs: w.Attrs, kind: int, how: str) -> object:
    if how == "p":
        path = attrs.path(kind)
        if len(path) > 4095 or "\0" in path:
            raise w.AttrError(f"its attribute {kind} is not a path btrfs allows")
        return path
    if how == "n":
        return attrs.number(kind)
    if how == "n0":
        return attrs.number(kind, 0)
    if how == "t":
        return attrs.time_ns(kind)
    if how == "u":
        value = attrs.raw(kind)
        if len(value) != 16:
            raise w.AttrError(f"its UUID has {len(value)} bytes, not 16")
        return value.hex()
    return attrs.raw(kind)


def encode_record(record: Record) -> bytes:
    """``record`` as the index stores it: the command it came from."""
    number, layout = _LAYOUTS[type(record)]
    return w.command(
        number,
        *(w.attribute(kind, _encode(getattr(record, name, None), how, record))
          for name, kind, how in layout),
    )  # fmt: skip


def decode_record(command: int, attrs: w.Attrs) -> Record:
    """The record of a stored command; ``AttrError`` unless it is one an index holds."""
    found = _BY_COMMAND.get(command)
    if found is None:
        raise w.AttrError("it is not a command a file index holds")
    kind, layout = found
    # Layouts list fields in the record's order (a reference last: length, stream offset).
    values: list[object] = []
    for _, attr, how in layout:
        if how == "ref":
            stream_offset, length = attrs.data_ref()
            values += (length, stream_offset)
        else:
            values.append(_decode(attrs, attr, how))
    return kind(*values)


def file_header(stream_header: bytes) -> bytes:
    """What an index starts with: ``MAGIC``, its version, and the stream's own header."""
    return MAGIC + w.U32.pack(VERSION) + stream_header


def index_end(stream_size: int) -> bytes:
    """What completes an index of a stream of ``stream_size`` bytes (after its END)."""
    return w.command(w.END) + w.command(
        w.C_INDEX_END, w.attribute(w.A_STREAM_SIZE, w.U64.pack(stream_size))
    )


class IndexWriter:
    """Writes an index of hand-made records (tests, tools); backups write theirs with
    ``pipeline.sendindex.StreamIndexer``, which copies the stream's commands instead."""

    def __init__(self, out: IO[bytes], header: Header) -> None:
        self._out = out
        out.write(file_header(STREAM_MAGIC + w.U32.pack(header.stream_version)))
        first = [w.attribute(w.PATH, os.fsencode(header.subvolume))]
        first.append(w.attribute(w.UUID, bytes.fromhex(header.uuid)))
        if header.parent_uuid is not None:
            first.append(w.attribute(w.CLONE_UUID, bytes.fromhex(header.parent_uuid)))
        out.write(w.command(w.SUBVOL if header.parent_uuid is None else w.SNAPSHOT, *first))

    def write(self, record: Record) -> None:
        self._out.write(encode_record(record))

    def end(self, stream_size: int) -> None:
        """The index is complete: ``stream_size`` raw stream bytes were indexed."""
        self._out.write(index_end(stream_size))


def read_index(data: IO[bytes], where: str) -> Index:
    """The index in ``data`` (as ``StreamIndexer`` or ``IndexWriter`` wrote it), checked.

    ``FileIndexError`` names ``where`` and the command for anything that is not a complete
    index of this format: an unknown command, a malformed attribute, a missing end.
    """
    start = data.read(len(MAGIC) + 4 + len(STREAM_MAGIC) + 4)
    if not start.startswith(MAGIC):
        raise FileIndexError(f"{where}: not a btrsendd file index")
    (version,) = w.U32.unpack_from(start, len(MAGIC)) if len(start) >= len(MAGIC) + 4 else (-1,)
    if version != VERSION:
        raise FileIndexError(
            f"{where}: file index version {version} is not one this btrsendd reads "
            f"({VERSION}); upgrade btrsendd"
        )
    stream_header = start[len(MAGIC) + 4 :]
    if len(stream_header) != len(STREAM_MAGIC) + 4 or not stream_header.startswith(STREAM_MAGIC):
        raise FileIndexError(f"{where}: the file index lacks its send stream header (damaged?)")
    (stream_version,) = w.U32.unpack_from(stream_header, len(STREAM_MAGIC))
    reader = _Commands(data, where)
    header: Header | None = None
    records: list[Record] = []
    for number, command, attrs in reader:
        try:
            if header is None:
                header = _header(number, command, attrs, stream_version)
            elif command == w.END:
                return Index(header, tuple(records), reader.stream_size())
            else:
                records.append(decode_record(command, attrs))
        except w.AttrError as exc:
            raise reader.error(number, command, str(exc)) from None
    raise FileIndexError(f"{where}: the file index ends before its END (truncated?)")


def _header(number: int, command: int, attrs: w.Attrs, stream_version: int) -> Header:
    if command not in (w.SUBVOL, w.SNAPSHOT):
        raise w.AttrError("the index does not begin with a subvolume")
    uuid = attrs.raw(w.UUID).hex()
    parent = attrs.raw(w.CLONE_UUID).hex() if command == w.SNAPSHOT else None
    return Header(stream_version, attrs.path(), uuid, parent)


class _Commands:
    """The commands of a stored index, read one at a time."""

    def __init__(self, data: IO[bytes], where: str) -> None:
        self._data = data
        self._where = where
        self._count = 0

    def error(self, number: int, command: int, problem: str) -> FileIndexError:
        return FileIndexError(
            f"{self._where}: the file index is damaged: its command {number} ({command}): {problem}"
        )

    def _next(self) -> tuple[int, int, w.Attrs] | None:
        head = self._data.read(w.COMMAND_HEADER)
        if not head:
            return None
        self._count += 1
        if len(head) < w.COMMAND_HEADER:
            raise self.error(self._count, -1, "cut short in its header")
        length, command, _ = w.COMMAND.unpack(head)
        if length > COMMAND_MAX:
            raise self.error(self._count, command, f"it claims {length} bytes")
        payload = self._data.read(length)
        if len(payload) != length:
            raise self.error(self._count, command, "cut short")
        try:
            attrs = w.Attrs(memoryview(payload), 0, length)
        except w.AttrError as exc:
            raise self.error(self._count, command, str(exc)) from None
        return self._count, command, attrs

    def __iter__(self) -> Iterator[tuple[int, int, w.Attrs]]:
        while (found := self._next()) is not None:
            yield found

    def stream_size(self) -> int:
        """After END: the index's end command, and nothing after it."""
        found = self._next()
        if found is None or found[1] != w.C_INDEX_END:
            raise FileIndexError(f"{self._where}: the file index ends without its end (cut?)")
        number, command, attrs = found
        try:
            size = attrs.number(w.A_STREAM_SIZE)
        except w.AttrError as exc:
            raise self.error(number, command, str(exc)) from None
        if self._data.read(1):
            raise FileIndexError(f"{self._where}: the file index goes on after its end")
        return size

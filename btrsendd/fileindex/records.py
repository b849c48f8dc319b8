"""The file index's records: what one backup's send stream did, without its data.

A send stream is a program for ``btrfs receive``: create this, rename that, write these bytes
at that offset.  The file index keeps that program with every data payload replaced by where
the payload lies in the raw stream (``stream_offset``: the offset of its first byte among the
bytes ``btrfs send`` wrote, which the volumes' ``raw_offset``/``raw_length`` map to volumes).
Replaying the records of a chain, from its full backup to a day, tells what every path was on
that day and which stored bytes hold its contents, without reading a single volume.

Keeping the stream's own commands, rather than a tree worked out while backing up, is what
lets the host write an index without reading any earlier one: the host holds public keys
only, so it cannot decrypt yesterday's index, and an incremental stream speaks of paths
relative to the parent snapshot (including the temporary ``o<ino>-<gen>-0`` names btrfs send
uses while it reorders a tree).  Only the reader, who holds the private key, replays.

The stored form (before compression and encryption, as the volumes are) is JSON lines: a
header object, then one array per command, ``[tag, field, ...]``, then ``["end",
stream_size]``.  Paths are file system bytes, carried as ``os.fsdecode`` strings (JSON's
``\\udcXX`` escapes keep undecodable bytes); xattr names and values are base64.  Reading is
strict: an index comes back from storage others may write to, and every field is checked for
its exact type before anything trusts it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import IO, Any, ClassVar

from btrsendd.errors import OperationalError
from btrsendd.strictjson import Invalid, clip

FORMAT = "btrsendd-file-index"
VERSION = 1

#: One record's line: far above any path btrfs allows (4 KiB) plus a 64 KiB xattr in base64.
LINE_MAX = 256 * 1024


class FileIndexError(OperationalError):
    """An index that is not one btrsendd wrote: damaged, truncated, or forged."""


@dataclass(frozen=True)
class Header:
    """What the index is of: the send stream's version and the subvolume it sent."""

    stream_version: int
    subvolume: str
    uuid: str
    #: The subvolume an incremental stream is relative to; None for a full one.
    parent_uuid: str | None


class Record:
    """Base of the command records; ``TAG`` is the stored tag."""

    TAG: ClassVar[str]
    path: str


@dataclass(frozen=True, slots=True)
class Mkfile(Record):
    TAG: ClassVar[str] = "mkfile"
    path: str


@dataclass(frozen=True, slots=True)
class Mkdir(Record):
    TAG: ClassVar[str] = "mkdir"
    path: str


@dataclass(frozen=True, slots=True)
class Mknod(Record):
    """MKNOD, MKFIFO and MKSOCK alike: ``mode`` carries the file type (``stat.S_IFMT``)."""

    TAG: ClassVar[str] = "mknod"
    path: str
    mode: int
    rdev: int


@dataclass(frozen=True, slots=True)
class Symlink(Record):
    TAG: ClassVar[str] = "symlink"
    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Rename(Record):
    TAG: ClassVar[str] = "rename"
    path: str
    to: str


@dataclass(frozen=True, slots=True)
class Link(Record):
    """A new name ``path`` for the file already at ``target`` (a hard link)."""

    TAG: ClassVar[str] = "link"
    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Unlink(Record):
    TAG: ClassVar[str] = "unlink"
    path: str


@dataclass(frozen=True, slots=True)
class Rmdir(Record):
    TAG: ClassVar[str] = "rmdir"
    path: str


@dataclass(frozen=True, slots=True)
class SetXattr(Record):
    TAG: ClassVar[str] = "set_xattr"
    path: str
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class RemoveXattr(Record):
    TAG: ClassVar[str] = "remove_xattr"
    path: str
    name: bytes


@dataclass(frozen=True, slots=True)
class Write(Record):
    """``length`` bytes written at ``offset``, found at ``stream_offset`` in the raw stream."""

    TAG: ClassVar[str] = "write"
    path: str
    offset: int
    length: int
    stream_offset: int


@dataclass(frozen=True, slots=True)
class Clone(Record):
    """``length`` bytes at ``offset`` shared from ``source_path`` at ``source_offset`` in the
    subvolume ``source_uuid`` names: the one being received, or the parent snapshot (as it
    was before this stream)."""

    TAG: ClassVar[str] = "clone"
    path: str
    offset: int
    length: int
    source_path: str
    source_offset: int
    source_uuid: str
    source_ctransid: int


@dataclass(frozen=True, slots=True)
class EncodedWrite(Record):
    """Compressed data written as is (send protocol 2, ``--compressed-data``): ``length``
    stored bytes at ``stream_offset`` that decode to ``unencoded_length`` bytes, of which
    ``unencoded_file_length`` from ``unencoded_offset`` land at ``offset``."""

    TAG: ClassVar[str] = "encoded_write"
    path: str
    offset: int
    unencoded_file_length: int
    unencoded_length: int
    unencoded_offset: int
    compression: int
    encryption: int
    length: int
    stream_offset: int


@dataclass(frozen=True, slots=True)
class Truncate(Record):
    TAG: ClassVar[str] = "truncate"
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class Fallocate(Record):
    """``mode`` as fallocate(2)'s: 0 allocates (zeros), ``FALLOC_FL_PUNCH_HOLE`` punches."""

    TAG: ClassVar[str] = "fallocate"
    path: str
    mode: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Chmod(Record):
    TAG: ClassVar[str] = "chmod"
    path: str
    mode: int


@dataclass(frozen=True, slots=True)
class Chown(Record):
    TAG: ClassVar[str] = "chown"
    path: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Utimes(Record):
    """Times in nanoseconds since the epoch (ctime is kept for ``find``; no one can set it)."""

    TAG: ClassVar[str] = "utimes"
    path: str
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class Fileattr(Record):
    """The inode flags (``chattr``), as btrfs keeps them."""

    TAG: ClassVar[str] = "fileattr"
    path: str
    attr: int


@dataclass(frozen=True, slots=True)
class UpdateExtent(Record):
    """Data changed without its bytes (``btrfs send --no-data``): nothing to restore from."""

    TAG: ClassVar[str] = "update_extent"
    path: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class EnableVerity(Record):
    TAG: ClassVar[str] = "enable_verity"
    path: str


RECORD_TYPES: tuple[type[Record], ...] = (
    Mkfile, Mkdir, Mknod, Symlink, Rename, Link, Unlink, Rmdir, SetXattr, RemoveXattr, Write,
    Clone, EncodedWrite, Truncate, Fallocate, Chmod, Chown, Utimes, Fileattr, UpdateExtent,
    EnableVerity,
)  # fmt: skip
_BY_TAG: dict[str, type[Record]] = {t.TAG: t for t in RECORD_TYPES}
#: Each type's fields after the tag, and how each is stored: "p" a path (str), "b" bytes
#: (base64), "i" a non-negative integer, "t" a time (an integer before 1970 is negative),
#: "s" plain text (UUIDs).
_SHAPES: dict[type[Record], tuple[tuple[str, str], ...]] = {
    t: tuple(
        (f.name, "b" if f.type == "bytes" else "i" if f.type == "int" else "p")
        for f in fields(t)  # type: ignore[arg-type]
    )
    for t in RECORD_TYPES
}
_SHAPES[Clone] = tuple((n, "s" if n == "source_uuid" else k) for n, k in _SHAPES[Clone])
_SHAPES[Utimes] = tuple((n, "t" if n.endswith("_ns") else k) for n, k in _SHAPES[Utimes])


def _stored(value: object, kind: str) -> object:
    if kind == "b":
        assert isinstance(value, bytes)
        return base64.b64encode(value).decode("ascii")
    return value


class IndexWriter:
    """Writes a header, then records, then the end, as JSON lines into ``out``."""

    def __init__(self, out: IO[bytes], header: Header) -> None:
        self._out = out
        doc = {"format": FORMAT, "version": VERSION, **header.__dict__}
        out.write(json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n")

    def write(self, record: Record) -> None:
        row = [record.TAG, *(_stored(getattr(record, n), k) for n, k in _SHAPES[type(record)])]
        self._out.write(json.dumps(row, separators=(",", ":")).encode("ascii") + b"\n")

    def end(self, stream_size: int) -> None:
        """The index is complete: ``stream_size`` raw stream bytes were indexed."""
        self._out.write(json.dumps(["end", stream_size]).encode("ascii") + b"\n")


@dataclass(frozen=True)
class Index:
    """A whole index as read: the header, the records in stream order, the stream's size."""

    header: Header
    records: tuple[Record, ...]
    stream_size: int


def read_index(lines: IO[bytes], where: str) -> Index:
    """The index in ``lines`` (JSON lines as ``IndexWriter`` writes them), checked.

    ``FileIndexError`` names ``where`` and the line for anything that is not a complete index
    of this format: an unknown tag, a wrong type, a missing end, anything after it.
    """
    reader = _Lines(lines, where)
    header = reader.header()
    records: list[Record] = []
    for number, row in reader:
        tag = row[0]
        if tag == "end":
            if len(row) != 2 or not _is_int(row[1]):
                raise reader.error(number, "a malformed end record")
            if next(iter(reader), None) is not None:
                raise reader.error(number + 1, "something after the end record")
            return Index(header, tuple(records), row[1])
        records.append(_record(row, lambda problem, n=number: reader.error(n, problem)))
    raise FileIndexError(f"{where}: the file index ends without its end record (truncated?)")


class _Lines:
    def __init__(self, lines: IO[bytes], where: str) -> None:
        self._lines = lines
        self._where = where
        self._number = 0

    def error(self, number: int, problem: str) -> FileIndexError:
        return FileIndexError(f"{self._where}: line {number} of the file index: {problem}")

    def _next(self) -> Any | None:
        line = self._lines.readline(LINE_MAX + 1)
        if not line:
            return None
        self._number += 1
        if len(line) > LINE_MAX:
            raise self.error(self._number, f"a line longer than {LINE_MAX} bytes")
        try:
            return json.loads(line.decode("ascii"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise self.error(self._number, f"not JSON ({clip(str(exc))})") from None

    def header(self) -> Header:
        doc = self._next()
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FileIndexError(f"{self._where}: not a btrsendd file index")
        if doc.get("version") != VERSION:
            raise FileIndexError(
                f"{self._where}: file index version {clip(repr(doc.get('version')))} is not "
                f"one this btrsendd reads ({VERSION}); upgrade btrsendd"
            )
        try:
            return Header(
                stream_version=_field(doc, "stream_version", int),
                subvolume=_field(doc, "subvolume", str),
                uuid=_field(doc, "uuid", str),
                parent_uuid=_field(doc, "parent_uuid", str, optional=True),
            )
        except Invalid as exc:
            raise self.error(1, str(exc)) from None

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        while (row := self._next()) is not None:
            if not isinstance(row, list) or not row or not isinstance(row[0], str):
                raise self.error(self._number, "not a record")
            yield self._number, row


def _record(row: list[Any], error: Any) -> Record:
    kind = _BY_TAG.get(row[0])
    if kind is None:
        raise error(f"unknown record {clip(repr(row[0]))}")
    shape = _SHAPES[kind]
    if len(row) != len(shape) + 1:
        raise error(f"a {kind.TAG} record with {len(row) - 1} fields, not {len(shape)}")
    values: list[object] = []
    for (name, how), value in zip(shape, row[1:], strict=True):
        if how in "it":
            if not _is_int(value) or (how == "i" and value < 0):
                raise error(
                    f"{kind.TAG}.{name} is not {'a non-negative ' if how == 'i' else 'an '}integer"
                )
        elif not isinstance(value, str):
            raise error(f"{kind.TAG}.{name} is not text")
        elif how == "b":
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise error(f"{kind.TAG}.{name} is not base64") from None
        elif how == "p" and not _is_path(value):
            raise error(f"{kind.TAG}.{name} is not a path btrfs allows")
        values.append(value)
    return kind(*values)


def _is_path(value: str) -> bool:
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError:  # a surrogate no file system byte decodes to
        return False
    return len(encoded) <= 4095 and b"\0" not in encoded


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(doc: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Invalid(name, f"not {kind.__name__}")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")

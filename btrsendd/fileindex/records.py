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

How they are stored is ``storedform.py``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass

from btrsendd.errors import OperationalError


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
    """Base of the command records: every one names the path it acts on."""

    path: str


@dataclass(frozen=True, slots=True)
class Mkfile(Record):
    path: str


@dataclass(frozen=True, slots=True)
class Mkdir(Record):
    path: str


@dataclass(frozen=True, slots=True)
class Mknod(Record):
    """MKNOD, MKFIFO and MKSOCK alike: ``mode`` carries the file type (``stat.S_IFMT``)."""

    path: str
    mode: int
    rdev: int


@dataclass(frozen=True, slots=True)
class Symlink(Record):
    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Rename(Record):
    path: str
    to: str


@dataclass(frozen=True, slots=True)
class Link(Record):
    """A new name ``path`` for the file already at ``target`` (a hard link)."""

    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Unlink(Record):
    path: str


@dataclass(frozen=True, slots=True)
class Rmdir(Record):
    path: str


@dataclass(frozen=True, slots=True)
class SetXattr(Record):
    path: str
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class RemoveXattr(Record):
    path: str
    name: bytes


@dataclass(frozen=True, slots=True)
class Write(Record):
    """``length`` bytes written at ``offset``, found at ``stream_offset`` in the raw stream."""

    path: str
    offset: int
    length: int
    stream_offset: int


@dataclass(frozen=True, slots=True)
class Clone(Record):
    """``length`` bytes at ``offset`` shared from ``source_path`` at ``source_offset`` in the
    subvolume ``source_uuid`` names: the one being received, or the parent snapshot (as it
    was before this stream)."""

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
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class Fallocate(Record):
    """``mode`` as fallocate(2)'s: 0 allocates (zeros), ``FALLOC_FL_PUNCH_HOLE`` punches."""

    path: str
    mode: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Chmod(Record):
    path: str
    mode: int


@dataclass(frozen=True, slots=True)
class Chown(Record):
    path: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Utimes(Record):
    """Times in nanoseconds since the epoch (ctime is kept for ``find``; no one can set it)."""

    path: str
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class Fileattr(Record):
    """The inode flags (``chattr``), as btrfs keeps them."""

    path: str
    attr: int


@dataclass(frozen=True, slots=True)
class UpdateExtent(Record):
    """Data changed without its bytes (``btrfs send --no-data``): nothing to restore from."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class EnableVerity(Record):
    path: str


@dataclass(frozen=True)
class Index:
    """A whole index as read: the header, the records in stream order, the stream's size."""

    header: Header
    records: tuple[Record, ...]
    stream_size: int

"""The send stream's commands and attributes as bytes, for the file index's stored form.

The stored index is the send stream's own command sequence with every data payload replaced
by a reference to where it lies (``A_DATA_REF``), so that writing it while backing up costs
little more than copying command headers (a JSON or any per-field form cost ten times the
stream check on a stream of small files), and reading it reuses one attribute reader.

The numbers are btrfs's (``kernel-shared/send.h``); the three private ones are far above any
btrfs uses, so an index can never be mistaken for a stream or a stream for an index.
"""

from __future__ import annotations

import os
import struct

# Attribute types (``BTRFS_SEND_A_*``).
(UUID, CTRANSID, INO, SIZE, MODE, UID, GID, RDEV, CTIME, MTIME, ATIME, OTIME, XATTR_NAME,
 XATTR_DATA, PATH, PATH_TO, PATH_LINK, FILE_OFFSET, DATA, CLONE_UUID, CLONE_CTRANSID,
 CLONE_PATH, CLONE_OFFSET, CLONE_LEN, FALLOCATE_MODE, FILEATTR, UNENCODED_FILE_LEN,
 UNENCODED_LEN, UNENCODED_OFFSET, COMPRESSION, ENCRYPTION) = range(1, 32)  # fmt: skip

# Command numbers (``BTRFS_SEND_C_*``).
(SUBVOL, SNAPSHOT, MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK, RENAME, LINK, UNLINK, RMDIR,
 SET_XATTR, REMOVE_XATTR, WRITE, CLONE, TRUNCATE, CHMOD, CHOWN, UTIMES, END, UPDATE_EXTENT,
 FALLOCATE, FILEATTR_CMD, ENCODED_WRITE, ENABLE_VERITY) = range(1, 27)  # fmt: skip

#: In the index, in place of a write's DATA: u64 offset in the raw stream, u64 length.
A_DATA_REF = 0x7F01
#: The index's last command: its one attribute, the raw stream's size.
C_INDEX_END = 0x7F02
A_STREAM_SIZE = 0x7F03

COMMAND = struct.Struct("<IHI")
COMMAND_HEADER = COMMAND.size
ATTR = struct.Struct("<HH")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
DATA_REF = struct.Struct("<QQ")
#: A time: seconds (signed: before 1970 is negative) and nanoseconds.
TIMESPEC = struct.Struct("<qI")


class AttrError(ValueError):
    """An attribute is missing or malformed; the text says which (without where)."""


class Attrs:
    """One command's attributes: where each value lies in the buffer it was read from.

    Values are sliced only when asked for, so a write's data is never copied, only located.
    In version 2 and later streams ``DATA`` has no length and runs to the command's end.
    """

    __slots__ = ("found", "view")

    def __init__(self, view: memoryview, start: int, stop: int, data_has_length: bool = True):
        self.view = view
        self.found: dict[int, tuple[int, int]] = {}
        pos = start
        while pos < stop:
            if stop - pos < 2:
                raise AttrError("it ends inside an attribute")
            (kind,) = U16.unpack_from(view, pos)
            if kind == DATA and not data_has_length:
                self.found[kind] = (pos + 2, stop - pos - 2)
                break
            if stop - pos < ATTR.size:
                raise AttrError("it ends inside an attribute")
            kind, length = ATTR.unpack_from(view, pos)
            pos += ATTR.size
            if length > stop - pos:
                raise AttrError(f"its attribute {kind} runs past its end")
            self.found[kind] = (pos, length)
            pos += length

    def value_at(self, kind: int) -> tuple[int, int]:
        """Where attribute ``kind``'s value lies (offset in the view, length)."""
        found = self.found.get(kind)
        if found is None:
            raise AttrError(f"it lacks attribute {kind}")
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
            return int(U64.unpack_from(self.view, start)[0])
        if length == 4:
            return int(U32.unpack_from(self.view, start)[0])
        raise AttrError(f"its attribute {kind} has {length} bytes, not 4 or 8")

    def time_ns(self, kind: int) -> int:
        start, length = self.value_at(kind)
        if length != TIMESPEC.size:
            raise AttrError(f"its time {kind} has {length} bytes, not {TIMESPEC.size}")
        seconds, nanoseconds = TIMESPEC.unpack_from(self.view, start)
        return int(seconds) * 1_000_000_000 + int(nanoseconds)

    def data_ref(self) -> tuple[int, int]:
        """The raw stream offset and length of the data a write carried."""
        start, length = self.value_at(A_DATA_REF)
        if length != DATA_REF.size:
            raise AttrError(f"its data reference has {length} bytes, not {DATA_REF.size}")
        offset, size = DATA_REF.unpack_from(self.view, start)
        return int(offset), int(size)


def attribute(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"attribute {kind} of {len(value)} bytes")
    return ATTR.pack(kind, len(value)) + value


def command(number: int, *attributes: bytes) -> bytes:
    """A command as the index stores it: the checksum is 0 (the object's SHA-256 covers it)."""
    payload = b"".join(attributes)
    return COMMAND.pack(len(payload), number, 0) + payload

"""The btrfs send stream, checked as it passes: framing, checksums, and what it says it is.

A backup is only as good as the stream ``btrfs receive`` will one day read back, and a stream
that is cut short, damaged or not a send stream at all looks like any other bytes to the rest
of the pipeline.  ``StreamChecker`` reads the stream chunk by chunk beside the pipeline and
refuses it the moment something is wrong, so that no such stream is ever called complete.

The format (btrfs-progs ``kernel-shared/send.h``, the kernel's ``fs/btrfs/send.h``):

* a stream header: the magic ``btrfs-stream\\0`` and a version (u32 LE, 1 to 3);
* commands, each a header (u32 LE payload length, u16 LE command, u32 LE checksum) and a
  payload of attributes (u16 type, u16 length, value; in version 2 and later the ``DATA``
  attribute has no length and runs to the end of its command);
* first exactly one ``SUBVOL`` (a full stream) or ``SNAPSHOT`` (an incremental one), which
  names the subvolume sent and, for ``SNAPSHOT``, the one it is relative to; last ``END``,
  with nothing after it.

The checksum is CRC-32C over the command header (its checksum field zeroed) and the payload,
as the kernel computes it: seed 0 and no final inversion, which is not the usual CRC-32C
(seed and result inverted).  The ``crc32c`` package computes the usual one; given the seed
``0xFFFFFFFF`` its internal register starts at 0, and inverting its result undoes the final
inversion, so the kernel's value is ``crc32c(data, 0xFFFFFFFF) ^ 0xFFFFFFFF`` and it chains
over pieces like any CRC (``tests/pipeline/test_sendstream.py`` checks this on real streams).

The stream header has no checksum.  A damaged magic or an unknown version is refused, but
one bit flip turns version 1 into version 3, under which every version 1 command is still
valid, and that the checker cannot see (``btrfs receive`` would then misread the length of
WRITE data).  It is about what btrsendd is given; damage after storing is caught by the
volumes' SHA-256 sums, checked at every restore.

Nothing is buffered but a command header and the first command (at most 64 KiB): memory stays
flat whatever the stream's length.  Payloads are checksummed in place, in C (hardware
CRC-32C, about 15 GiB/s here), and an ordinary command costs about half a microsecond of
Python: 3.4 GiB/s on a stream of mostly small files (148,000 commands in 360 MiB).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

import crc32c

from btrsendd.errors import OperationalError
from btrsendd.model import StreamIdentity
from btrsendd.pipeline.readers import Tap
from btrsendd.storage.base import Readable

MAGIC = b"btrfs-stream\0"
#: The magic and the u32 version.
STREAM_HEADER = len(MAGIC) + 4
#: u32 payload length, u16 command, u32 checksum.
COMMAND_HEADER = 10
_COMMAND = struct.Struct("<IHI")
_VERSION = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")

#: The highest command number each stream version knows (``BTRFS_SEND_C_MAX_V*``).
LAST_COMMAND = {1: 22, 2: 25, 3: 26}

SUBVOL, SNAPSHOT, END = 1, 2, 21
_NAMES = (
    "UNSPEC SUBVOL SNAPSHOT MKFILE MKDIR MKNOD MKFIFO MKSOCK SYMLINK RENAME LINK UNLINK RMDIR "
    "SET_XATTR REMOVE_XATTR WRITE CLONE TRUNCATE CHMOD CHOWN UTIMES END UPDATE_EXTENT "
    "FALLOCATE FILEATTR ENCODED_WRITE ENABLE_VERITY"
).split()

# Attribute types (``BTRFS_SEND_A_*``) the first command carries, and DATA for its framing.
_A_UUID, _A_CTRANSID, _A_PATH, _A_DATA, _A_CLONE_UUID, _A_CLONE_CTRANSID = 1, 2, 15, 19, 20, 21

#: The first command is kept whole to read the identity from; SUBVOL and SNAPSHOT carry a
#: path and four small attributes, far below btrfs's own limit for a version 1 command.
FIRST_COMMAND_MAX = 64 * 1024

#: The ``crc32c`` package's seed that starts its register at 0 (see the module docstring).
_CRC_SEED = 0xFFFFFFFF
_ZEROED_CRC = bytes(4)

#: What common non-stream inputs start with, to say what was given instead.
_KNOWN_FORMATS = (
    (b"\x1f\x8b", "gzip-compressed data: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data: decompress it first"),
    (b"\xfd7zXZ\x00", "xz-compressed data: decompress it first"),
    (b"BZh", "bzip2-compressed data: decompress it first"),
    (b"\x04\x22\x4d\x18", "lz4-compressed data: decompress it first"),
    (b"-----BEGIN PGP", "PGP-armored data: decrypt it first"),
)

_HEADER, _COMMAND_HEAD, _PAYLOAD, _ENDED = range(4)


class StreamError(OperationalError):
    """The send stream is not a complete, undamaged btrfs send stream of what was planned."""


def command_name(command: int) -> str:
    return _NAMES[command] if 0 <= command < len(_NAMES) else f"command {command}"


def uuid_text(hex_uuid: str) -> str:
    """A hex UUID as ``btrfs subvolume show`` prints it, for messages."""
    return str(uuid.UUID(hex=hex_uuid))


def _not_a_stream(start: bytes) -> StreamError:
    hint = next((what for magic, what in _KNOWN_FORMATS if start.startswith(magic)), None)
    shown = start[:16].hex(" ")
    return StreamError(
        f"not a btrfs send stream (it starts with {shown}"
        + (f": {hint})" if hint else "; expected the magic 'btrfs-stream')")
    )


class StreamChecker:
    """Checks a send stream fed to it in chunks of any size, without keeping it.

    ``feed`` raises ``StreamError`` as soon as the bytes seen cannot be the start of a valid
    stream; ``finish`` (at the end of the input) raises unless the stream ended properly.
    ``expect``, if given, is called with the stream's identity as soon as its first command
    has been read, and may raise ``StreamError`` to refuse the stream there and then.
    """

    def __init__(self, expect: Callable[[StreamIdentity], None] | None = None) -> None:
        self._expect = expect
        #: Bytes fed so far: the offset of the next byte.
        self.size = 0
        self.version = 0
        self._identity: StreamIdentity | None = None
        self._phase = _HEADER
        #: A header being assembled across chunks, or the first command's payload.
        self._pending = bytearray()
        #: Payload bytes still to come in the current command.
        self._remaining = 0
        self._command = 0
        self._command_start = 0
        self._crc = 0
        self._stored_crc = 0
        self._started = False
        self._error: StreamError | None = None

    @property
    def identity(self) -> StreamIdentity | None:
        """What the stream says it is; None until its first command has been read."""
        return self._identity

    def feed(self, data: memoryview | bytes) -> None:
        """Check the next ``data`` of the stream; raises ``StreamError`` at the first fault
        (and again at every later call: once refused, a stream stays refused)."""
        if self._error is not None:
            raise self._error
        try:
            self._feed(memoryview(data).cast("B"))
        except StreamError as exc:
            self._error = exc
            raise

    def _feed(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            phase = self._phase
            if phase == _PAYLOAD:
                pos = self._payload(view, pos, end)
            elif phase == _COMMAND_HEAD:
                if self._pending:
                    pos = self._gather(view, pos, end, COMMAND_HEADER)
                    if len(self._pending) == COMMAND_HEADER:
                        header, self._pending = self._pending, bytearray()
                        self._begin(memoryview(header), self.size + pos - COMMAND_HEADER)
                    continue
                pos = self._whole_commands(view, pos, end)
                if end - pos >= COMMAND_HEADER:
                    self._begin(view[pos : pos + COMMAND_HEADER], self.size + pos)
                    pos += COMMAND_HEADER
                elif pos < end:
                    pos = self._gather(view, pos, end, COMMAND_HEADER)
            elif phase == _HEADER:
                pos = self._gather(view, pos, end, STREAM_HEADER)
                self._stream_header()
            else:
                raise self._trailing(view[pos:], self.size + pos)
        self.size += end

    def finish(self) -> StreamIdentity:
        """The stream's identity, once its input has ended; ``StreamError`` unless complete."""
        if self._error is not None:
            raise self._error
        if self._phase == _ENDED:
            assert self._identity is not None
            return self._identity
        if self.size == 0:
            raise StreamError(
                "the send stream is empty: nothing was backed up (is the input a btrfs send "
                "stream?)"
            )
        if self._phase == _HEADER:
            raise StreamError(
                f"the send stream ends in its header at byte {self.size} (truncated?)"
            )
        if self._phase == _COMMAND_HEAD and not self._pending:
            raise StreamError(
                f"the send stream ends at byte {self.size} without its END command (truncated?)"
            )
        raise StreamError(
            f"the send stream ends in the middle of a command at byte {self.size} (truncated?)"
        )

    # -- the parts of a stream ----------------------------------------------------------------

    def _whole_commands(self, view: memoryview, pos: int, end: int) -> int:
        """Check the ordinary commands that lie wholly in ``view`` from ``pos``, quickly.

        The common case, kept free of method calls and state: most commands are small, and
        this loop is where a stream of many small files spends its time.  It stops (returning
        where) at anything else: a command that continues in the next chunk, the first
        command, END, or a fault, all of which ``_begin`` handles and reports.
        """
        if self._identity is None:
            return pos
        unpack, crc, last = _COMMAND.unpack_from, crc32c.crc32c, LAST_COMMAND[self.version]
        while end - pos >= COMMAND_HEADER:
            length, command, stored_crc = unpack(view, pos)
            stop = pos + COMMAND_HEADER + length
            if stop > end or not SNAPSHOT < command <= last or command == END:
                break
            header_crc = crc(_ZEROED_CRC, crc(view[pos : pos + 6], _CRC_SEED))
            if crc(view[pos + COMMAND_HEADER : stop], header_crc) ^ _CRC_SEED != stored_crc:
                break
            pos = stop
        return pos

    def _gather(self, view: memoryview, pos: int, end: int, want: int) -> int:
        """Add bytes to a header split across chunks; returns the new position."""
        take = min(want - len(self._pending), end - pos)
        self._pending += view[pos : pos + take]
        return pos + take

    def _stream_header(self) -> None:
        got = bytes(self._pending)
        if not MAGIC.startswith(got[: len(MAGIC)]):
            raise _not_a_stream(got)
        if len(got) < STREAM_HEADER:
            return
        (version,) = _VERSION.unpack_from(got, len(MAGIC))
        if version not in LAST_COMMAND:
            raise StreamError(
                f"send stream version {version} at byte {len(MAGIC)} is not one this btrsendd "
                f"knows (1 to {max(LAST_COMMAND)}); upgrade btrsendd, or send with --proto 1"
            )
        self.version = version
        self._pending = bytearray()
        self._phase = _COMMAND_HEAD

    def _begin(self, header: memoryview, start: int) -> None:
        """Start a command from its 10-byte header, found at byte ``start``."""
        length, command, stored_crc = _COMMAND.unpack(header)
        if not 0 < command <= LAST_COMMAND[self.version]:
            raise StreamError(
                f"unknown command {command} at byte {start} of a version {self.version} send "
                "stream (damaged, or not a send stream)"
            )
        first = not self._started
        if first and command not in (SUBVOL, SNAPSHOT):
            raise StreamError(
                f"the send stream does not begin with a subvolume: its first command, at byte "
                f"{start}, is {command_name(command)}"
            )
        if not first and command in (SUBVOL, SNAPSHOT):
            raise StreamError(
                f"the send stream holds more than one subvolume (another {command_name(command)} "
                f"at byte {start}); back up one subvolume per stream"
            )
        if first and length > FIRST_COMMAND_MAX:
            raise StreamError(
                f"the send stream's {command_name(command)} command at byte {start} claims "
                f"{length} bytes, more than such a command can hold (damaged?)"
            )
        self._started = True
        self._command, self._command_start, self._stored_crc = command, start, stored_crc
        self._crc = crc32c.crc32c(_ZEROED_CRC, crc32c.crc32c(header[:6], _CRC_SEED))
        self._remaining = length
        self._phase = _PAYLOAD
        if length == 0:
            self._end_command()

    def _payload(self, view: memoryview, pos: int, end: int) -> int:
        take = min(self._remaining, end - pos)
        piece = view[pos : pos + take]
        self._crc = crc32c.crc32c(piece, self._crc)
        if self._identity is None:
            self._pending += piece
        self._remaining -= take
        if self._remaining == 0:
            self._end_command()
        return pos + take

    def _end_command(self) -> None:
        if self._crc ^ _CRC_SEED != self._stored_crc:
            raise StreamError(
                f"the send stream is damaged: the checksum of its {command_name(self._command)} "
                f"command at byte {self._command_start} does not match"
            )
        if self._identity is None:
            payload, self._pending = bytes(self._pending), bytearray()
            self._identity = self._read_identity(payload)
            if self._expect is not None:
                self._expect(self._identity)
        self._phase = _ENDED if self._command == END else _COMMAND_HEAD

    def _trailing(self, rest: memoryview, start: int) -> StreamError:
        if bytes(rest[: len(MAGIC)]) == MAGIC:
            return StreamError(
                f"a second send stream begins after the END command, at byte {start}; back up "
                "one subvolume per stream"
            )
        return StreamError(
            f"the send stream goes on after its END command, at byte {start} (something was "
            "appended?)"
        )

    def _read_identity(self, payload: bytes) -> StreamIdentity:
        where = f"the send stream's {command_name(self._command)} command at byte "
        where += str(self._command_start)
        attrs = _attributes(payload, self.version, where)

        def value(kind: int, label: str, size: int | None = None) -> bytes:
            found = attrs.get(kind)
            if found is None:
                raise StreamError(f"{where} has no {label} (damaged?)")
            if size is not None and len(found) != size:
                raise StreamError(f"{where} has a {label} of {len(found)} bytes, not {size}")
            return found

        parent_uuid = parent_ctransid = None
        if self._command == SNAPSHOT:
            parent_uuid = value(_A_CLONE_UUID, "parent UUID", 16).hex()
            (parent_ctransid,) = _U64.unpack(value(_A_CLONE_CTRANSID, "parent ctransid", 8))
        return StreamIdentity(
            version=self.version,
            name=value(_A_PATH, "subvolume name").decode(errors="backslashreplace"),
            uuid=value(_A_UUID, "UUID", 16).hex(),
            ctransid=_U64.unpack(value(_A_CTRANSID, "ctransid", 8))[0],
            parent_uuid=parent_uuid,
            parent_ctransid=parent_ctransid,
        )


def _attributes(payload: bytes, version: int, where: str) -> dict[int, bytes]:
    """A command's attributes by type (the last of a repeated type wins, as in btrfs receive)."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < 2:
            raise StreamError(f"{where} ends inside an attribute (damaged?)")
        (kind,) = _U16.unpack_from(payload, pos)
        pos += 2
        if version >= 2 and kind == _A_DATA:
            length = len(payload) - pos
        else:
            if len(payload) - pos < 2:
                raise StreamError(f"{where} ends inside an attribute (damaged?)")
            (length,) = _U16.unpack_from(payload, pos)
            pos += 2
            if length > len(payload) - pos:
                raise StreamError(f"{where} has an attribute running past its end (damaged?)")
        found[kind] = payload[pos : pos + length]
        pos += length
    return found


def checked(stream: Readable, checker: StreamChecker) -> Readable:
    """``stream``, read through ``checker``: its end raises ``StreamError`` unless complete.

    A consumer sees the same bytes (``readers.Tap``: without a copy where ``stream`` reads
    into a buffer), and at the end either a clean EOF after a complete stream or the
    ``StreamError`` that says what is wrong with it.
    """
    return Tap(stream, checker.feed, checker.finish)

"""A backup's file index, written from its send stream as the stream passes.

``StreamIndexer`` is fed the same chunks as the ``StreamChecker`` (which checks framing and
checksums first, so what reaches the indexer is a stream the checker has accepted so far) and
copies each command into the index (``fileindex/storedform.py``), a write's data replaced by
where it lies in the raw stream.  Copying instead of decoding keeps the cost near the
checker's: a stream of small files has millions of commands, and each one decoded in Python
would cost the backup several microseconds.

Nothing is kept but the command being read: a command lying wholly in a chunk (most do) is
copied from where it lies, one that straddles chunks is gathered first, and btrfs never
writes one larger than its send buffer (64 KiB in version 1, 144 KiB in version 2), which
``btrfs receive`` refuses too.
"""

from __future__ import annotations

from typing import IO

from btrsendd.fileindex import wire as w
from btrsendd.fileindex.storedform import file_header, index_end
from btrsendd.pipeline.readers import CHUNK
from btrsendd.pipeline.sendstream import STREAM_HEADER, StreamError, command_name
from btrsendd.storage.base import Readable

#: The largest command btrsendd indexes: far above btrfs's send buffers (see the docstring),
#: so that only a damaged or hostile length can reach it.
COMMAND_MAX = 4 * 1024 * 1024

_WITH_DATA = frozenset((w.WRITE, w.ENCODED_WRITE))


class StreamIndexer:
    """Writes the file index of a send stream fed to it in chunks of any size into ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        #: Stream bytes fed so far: the offset of the next byte.
        self._size = 0
        self._version = 0
        #: The stream header, or a command being gathered across chunks.
        self._pending = bytearray()
        self._ended = False

    def feed(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        if self._version == 0:
            pos = self._header(view)
        out, unpack, with_data = self._out, w.COMMAND.unpack_from, _WITH_DATA
        while pos < end:
            if self._ended:
                raise StreamError(
                    f"the send stream goes on after its END, at byte {self._size + pos}"
                )
            if self._pending:
                pos = self._gather(view, pos)
                continue
            # Copy the run of whole commands from here in one write: the common case.
            run = pos
            while end - pos >= w.COMMAND_HEADER:
                length, command, _ = unpack(view, pos)
                stop = pos + w.COMMAND_HEADER + length
                if stop > end or command in with_data or command == w.END:
                    break
                pos = stop
            if pos > run:
                out.write(view[run:pos])
                continue
            if end - pos < w.COMMAND_HEADER:
                self._pending += view[pos:end]
                break
            length = self._length(view, pos)
            if end - pos < w.COMMAND_HEADER + length:
                self._pending += view[pos:end]
                break
            self._special(view, pos, self._size + pos)
            pos += w.COMMAND_HEADER + length
        self._size += end

    def finish(self) -> None:
        """Complete the index; ``StreamError`` unless the stream ended with its END."""
        if not self._ended:
            raise StreamError(f"the send stream ends at byte {self._size} without its END")
        self._out.write(index_end(self._size))

    def _header(self, view: memoryview) -> int:
        take = min(STREAM_HEADER - len(self._pending), len(view))
        self._pending += view[:take]
        if len(self._pending) == STREAM_HEADER:
            self._version = w.U32.unpack_from(self._pending, STREAM_HEADER - 4)[0]
            self._out.write(file_header(bytes(self._pending)))
            self._pending = bytearray()
        return take

    def _length(self, view: memoryview | bytearray, pos: int) -> int:
        (length,) = w.U32.unpack_from(view, pos)
        if length > COMMAND_MAX:
            raise StreamError(
                f"the send stream's command at byte {self._size + pos} claims {length} "
                "bytes, more than btrfs send writes (damaged?)"
            )
        return int(length)

    def _gather(self, view: memoryview, pos: int) -> int:
        """Add to the command straddling chunks; index it once whole.  Returns the new pos."""
        pending = self._pending
        while True:
            want = w.COMMAND_HEADER
            if len(pending) >= w.COMMAND_HEADER:
                want += self._length(pending, 0)
                if len(pending) == want:
                    self._pending = bytearray()
                    self._special(memoryview(pending), 0, self._size + pos - len(pending))
                    return pos
            take = min(want - len(pending), len(view) - pos)
            if take == 0:
                return pos
            pending += view[pos : pos + take]
            pos += take

    def _special(self, view: memoryview, pos: int, at: int) -> None:
        """Index the whole command at ``view[pos:]`` (stream byte ``at``): a write's data
        replaced by its place, END remembered, anything else copied."""
        length, command, _ = w.COMMAND.unpack_from(view, pos)
        start, stop = pos + w.COMMAND_HEADER, pos + w.COMMAND_HEADER + length
        if command == w.END:
            self._ended = True
            return
        if command not in _WITH_DATA:
            self._out.write(view[pos:stop])
            return
        try:
            attrs = w.Attrs(view, start, stop, data_has_length=self._version < 2)
            data_at, data_length = attrs.value_at(w.DATA)
        except w.AttrError as exc:
            raise StreamError(
                f"the send stream's {command_name(command)} command at byte {at}: {exc}"
            ) from None
        kept = [
            bytes(view[offset - w.ATTR.size : offset + size])
            for kind, (offset, size) in attrs.found.items()
            if kind != w.DATA
        ]
        ref = w.DATA_REF.pack(at + data_at - pos, data_length)
        self._out.write(w.command(command, *kept, w.attribute(w.A_DATA_REF, ref)))


def index_stream(stream: Readable, out: IO[bytes]) -> None:
    """Write the file index of the whole send stream ``stream`` into ``out``."""
    indexer = StreamIndexer(out)
    while chunk := stream.read(CHUNK):
        indexer.feed(chunk)
    indexer.finish()

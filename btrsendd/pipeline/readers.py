"""Reading streams of bytes without copies, where the end of a stream means success.

Every stream btrsendd reads in bulk (a stage's output, a stored object, a send stream on its
way to the volumes) is read through one reused buffer with ``readinto`` where the stream has
it, so the only copy is the kernel's.  Two readers here refuse a clean EOF unless the stream
really is whole: ``PipeReader`` until every program that fed the pipe has exited cleanly
(``piper``), ``Tap`` until whatever watched the bytes go by (the send-stream check) agrees.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from btrsendd.storage.base import Readable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Bytes moved per read or write.  Pipes are enlarged to this size too (``piper``), so one
#: system call moves a whole chunk and the tools at both ends of a pipe rarely wait for each
#: other.
CHUNK = 1024 * 1024


class PipeReader:
    """File-like reads from a pipe, counted and optionally hashed; EOF only after success.

    ``read(n)`` returns exactly ``n`` bytes unless the stream ends, as a buffered file does:
    S3 multipart uploads read whole parts and would otherwise send undersized ones.  When
    the pipe ends, ``finish`` checks the producers and raises if one failed, so the consumer
    never sees a clean EOF after truncated output.
    """

    def __init__(self, fd: int, finish: Callable[[], None], *, digest: bool) -> None:
        self._fd = fd
        self._finish = finish
        self._sha = hashlib.sha256() if digest else None
        self.size = 0
        self.at_eof = False
        #: What ``finish`` raised, kept so the pipeline's own error is not lost when a
        #: consumer wraps it in one of its own.
        self.error: BaseException | None = None

    @property
    def sha256(self) -> str:
        assert self._sha is not None, "reader created without digest"
        return self._sha.hexdigest()

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill ``buffer`` (fewer bytes only at the end); no allocation, no copy but the
        kernel's.  The bulk path: ``read`` allocates a new object per call."""
        return self._readinto(buffer, fill=True)

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        """Like ``readinto``, but return what the pipe holds as soon as it holds anything
        (0 only at the end).  For a consumer that can use any amount: waiting to fill the
        buffer would leave the stage after it idle meanwhile."""
        return self._readinto(buffer, fill=False)

    def _readinto(self, buffer: WriteableBuffer, *, fill: bool) -> int:
        if self.error is not None:
            raise self.error
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view) and not self.at_eof:
            count = os.readv(self._fd, [view[got:]])
            if not count:
                self._end()
                break
            got += count
            if not fill:
                break
        if self._sha is not None:
            self._sha.update(view[:got])
        self.size += got
        return got

    def read(self, size: int = -1, /) -> bytes:
        if self.error is not None:
            raise self.error
        if self.at_eof or size == 0:
            return b""
        wanted = size if size > 0 else sys.maxsize
        pieces: list[bytes] = []
        got = 0
        while got < wanted:
            data = os.read(self._fd, min(CHUNK, wanted - got))
            if not data:
                self._end()
                break
            if self._sha is not None:
                self._sha.update(data)
            pieces.append(data)
            got += len(data)
        self.size += got
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _end(self) -> None:
        self.close()
        try:
            self._finish()
        except BaseException as exc:
            self.error = exc
            raise
        self.at_eof = True

    def close(self) -> None:
        """Close the pipe: a producer still writing gets EPIPE and stops; idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def readinto_of(stream: Readable) -> Callable[[memoryview], int]:
    """``stream.readinto`` where it exists (pipes, files: no copy), else ``read`` and a copy."""
    readinto: Callable[[memoryview], int] | None = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto

    def copy(view: memoryview) -> int:
        data = stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    return copy


def sha256_of(stream: Readable) -> str:
    """The SHA-256 of everything ``stream`` yields, read through one reused buffer."""
    sha = hashlib.sha256()
    readinto = readinto_of(stream)
    buffer = memoryview(bytearray(CHUNK))
    while count := readinto(buffer):
        sha.update(buffer[:count])
    return sha.hexdigest()


class Tap:
    """``stream`` with every byte read also shown to ``see``, and ``end`` called at its end.

    ``read``, ``readinto`` and ``readinto1`` pass on what ``stream`` gives (``readinto``
    without a copy where ``stream`` has one), so a consumer sees the same bytes; whatever
    ``see`` or ``end`` raise reaches the consumer in place of those bytes or of the EOF.
    """

    def __init__(
        self, stream: Readable, see: Callable[[memoryview | bytes], None], end: Callable[[], object]
    ) -> None:
        self._stream = stream
        self._see = see
        self._end = end
        self._readinto = readinto_of(stream)
        self._readinto1: Callable[[memoryview], int] = getattr(stream, "readinto1", self._readinto)

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._saw(data, size)
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        return self._into(buffer, self._readinto)

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        return self._into(buffer, self._readinto1)

    def _into(self, buffer: WriteableBuffer, readinto: Callable[[memoryview], int]) -> int:
        view = memoryview(buffer).cast("B")
        count = readinto(view)
        self._saw(view[:count], len(view))
        return count

    def _saw(self, data: memoryview | bytes, asked: int) -> None:
        if data:
            self._see(data)
        elif asked != 0:
            self._end()

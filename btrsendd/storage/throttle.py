"""The rate limit: bytes to (or from) storage paced to ``pipeline.rate_limit`` per second.

A backup on a home uplink must not starve everything else on it (restic's
``--limit-upload``, btrbk's ``rate_limit``).  One ``Throttle`` serves every thread of one
opened storage, so the parts a multipart upload sends at once share the limit instead of
each getting it.  Bytes are paced where they leave (or enter) the process, a slice at a
time: S3 and vault request bodies as the HTTP connection reads them, the local backend's
writes, a restore's reads.  Pacing the stream before it is cut into parts would let each
part leave in a burst at the link's full speed.

The pacing is a virtual clock (GCRA, as in ATM and many rate limiters): each slice moves
"when everything granted so far is paid for" on by its transmission time, and a caller
sleeps until its slice is paid for, less ``TOLERANCE``.  No credit accumulates while idle,
so there are no bursts beyond ``TOLERANCE x rate``; nothing is buffered, so memory is what
it was; waiting is ``time.sleep``, never a spin.  Slices are small (a tenth of a second's
worth at most), so a stop request is never more than a moment behind a sleep.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: A caller may run this far (in seconds) ahead of the rate before it sleeps: fewer, longer
#: sleeps, and a burst of at most this many seconds' worth of bytes.
TOLERANCE = 0.02
#: The largest slice paced at once; slower rates get a tenth of a second's worth.
MAX_SLICE = 64 * 1024
MIN_SLICE = 1024


class Throttle:
    """A rate limit shared by every thread that moves bytes through it; ``rate`` None is
    no limit (and then every method costs nothing and changes nothing)."""

    def __init__(self, rate: int | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate limit must be positive, not {rate}")
        self.rate = rate
        #: The most bytes paced at once: a tenth of a second's worth, within bounds.
        self.slice = MAX_SLICE if rate is None else max(MIN_SLICE, min(MAX_SLICE, rate // 10))
        self._lock = threading.Lock()
        #: When every byte granted so far is paid for (``time.monotonic``).
        self._paid_until = time.monotonic()

    @property
    def limited(self) -> bool:
        return self.rate is not None

    def take(self, count: int) -> None:
        """Wait until ``count`` more bytes fit the rate, counting every thread's."""
        if self.rate is None or count <= 0:
            return
        with self._lock:
            now = time.monotonic()
            # max(): time spent idle is not saved up for a burst later.
            self._paid_until = max(self._paid_until, now) + count / self.rate
            wait = self._paid_until - now
        if wait > TOLERANCE:
            time.sleep(wait)

    def write(self, write: Callable[[memoryview], object], data: bytes | memoryview) -> None:
        """``write(data)``, a slice at a time at the rate; one call when unlimited."""
        view = memoryview(data)
        if self.rate is None:
            write(view)
            return
        for start in range(0, len(view), self.slice):
            piece = view[start : start + self.slice]
            self.take(len(piece))
            write(piece)

    def body(self, data: bytes | bytearray) -> bytes | bytearray | BinaryIO:
        """A request body that hands ``data`` to the connection at the rate; ``data`` itself
        when unlimited.  Make a new one for each attempt of a request: a retry sends (and
        pays for) the bytes again."""
        if self.rate is None:
            return data
        return cast(BinaryIO, PacedBody(data, self))

    def reader(self, raw: BinaryIO) -> BinaryIO:
        """``raw`` read at the rate; ``raw`` itself when unlimited."""
        if self.rate is None:
            return raw
        return cast(BinaryIO, PacedReader(raw, self))


#: No limit: what storage opened without a rate uses.
UNLIMITED = Throttle(None)


class PacedBody(io.RawIOBase):
    """Bytes in memory as a seekable file whose reads are paced.

    botocore reads a body more than once: to hash it for the signature on plain-HTTP
    endpoints (the vault backend: always), then to send it, and again on a retry within the
    request.  Only bytes past the furthest point read so far are paid for, so one attempt
    costs its size once; where the hashing reads it, the pacing happens there and the send
    that follows goes at once.
    """

    def __init__(self, data: bytes | bytearray, throttle: Throttle) -> None:
        super().__init__()
        self._data = data
        self._throttle = throttle
        self._position = 0
        self._paid = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        start = self._position
        count = max(0, min(len(view), len(self._data) - start, self._throttle.slice))
        if start + count > self._paid:
            self._throttle.take(start + count - self._paid)
            self._paid = start + count
        # A slice of a bytearray is a copy, not an export: the multipart uploader may
        # resize its buffer once the part is sent, whoever still holds this body.
        view[:count] = self._data[start : start + count]
        self._position = start + count
        return count


class PacedReader(io.RawIOBase):
    """A stored object read at the rate, a slice at a time; closing it closes ``raw``."""

    def __init__(self, raw: BinaryIO, throttle: Throttle) -> None:
        super().__init__()
        self._raw = raw
        self._throttle = throttle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(min(len(view), self._throttle.slice))
        self._throttle.take(len(data))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()

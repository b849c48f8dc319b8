"""Reading one stored object as concurrent byte ranges, reassembled in order, as a file.

S3 serves each connection at tens of MB/s, so one GET stream at a time caps a restore far
below the link, while uploads already send several parts at once.  A ``RangedReader`` fetches
an object's ranges (``part_size`` bytes each) on up to ``concurrency`` threads and hands them
to its one consumer in order.  A backend only says how to fetch one range (``fill``), how to
retry it, and what a failure means; reading, ordering, memory and pacing are done here once.

Memory is the budget's, by construction: every range is fetched into a buffer that the
storage's ``RangeBudget`` lends, and it lends at most ``concurrency`` buffers of at most
``part_size`` bytes to all the readers of that storage together; a buffer goes back once the
consumer has read all of it.  Readers are served in the order they were opened: every range
of one is started before any range of the next, so a reader opened ahead (the next volume of a
restore) fetches into the buffers the current one gives back, and the pipeline stays full
across the seam without more memory.  So readers of one storage are read in the order they
were opened, or the earlier one closed first: a later one read first would wait for buffers
that only reading the earlier one gives back.

A range that fails or stalls (the client's read timeout) is fetched again by itself, from its
first byte, within the backend's retry policy; the backend pins each range to the object it
opened (S3's ``If-Match`` on the ETag, a vault's retrieval job), so ranges of two versions are
never spliced.  Bytes are paced by ``throttle`` as they arrive, all ranges together, so a rate
limit holds on the wire rather than only on average.  Closing a reader stops its fetches at
their next chunk (or retry wait) and waits for them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from btrsendd.errors import StorageError
from btrsendd.storage.base import Readable
from btrsendd.storage.throttle import UNLIMITED, Throttle

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Runs one attempt at a range again while it fails transiently, within the backend's retry
#: budget, waiting between attempts with the pause it is given (which ends early once the
#: reader is closed).
Retrying = Callable[[Callable[[], None], Callable[[float], None]], None]


class Cancelled(Exception):
    """A range's fetch stopped because its reader was closed: never retried or reported."""


class WrongLength(StorageError):
    """A range's body held fewer or more bytes than the range."""


class Part:
    """One range being fetched: bytes ``start`` to ``end`` (inclusive) of the object, into
    ``view``, a buffer lent by the budget."""

    def __init__(
        self, start: int, view: memoryview, throttle: Throttle, stop: threading.Event
    ) -> None:
        self.start = start
        self.view = view
        self._throttle = throttle
        self._stop = stop

    @property
    def end(self) -> int:
        return self.start + len(self.view) - 1

    def read_from(self, body: Readable) -> None:
        """Fill the range from a response body that must hold exactly its bytes.

        Read a slice at a time, each paced, so that a closed reader stops the fetch within a
        slice.  One more read past the end must find nothing: it also lets a body check its
        length and checksum, which botocore's do when they reach their end.
        """
        into = _readinto_of(body)
        # The pacing slice (64 KiB unlimited) also keeps small the copies the HTTP stack
        # makes of each read, on every fetching thread at once: 1 MiB reads cost ~7 MiB of
        # peak RSS at the defaults, next to microseconds per read.
        step = self._throttle.slice
        view, filled = self.view, 0
        while filled < len(view):
            if self._stop.is_set():
                raise Cancelled
            count = into(view[filled : filled + step])
            if not count:
                break
            self._throttle.take(count)
            filled += count
        if filled < len(view) or into(memoryview(bytearray(1))):
            said = f"{filled} bytes" if filled < len(view) else "more bytes"
            raise WrongLength(f"bytes {self.start}-{self.end} came back as {said}, not {len(view)}")


def _readinto_of(body: Readable) -> Callable[[memoryview], int]:
    """``body.readinto`` (botocore's bodies have it: no copy), else ``read`` and a copy."""
    readinto: Callable[[memoryview], int] | None = getattr(body, "readinto", None)
    if readinto is not None:
        return readinto

    def copy(view: memoryview) -> int:
        data = body.read(len(view))
        view[: len(data)] = data
        return len(data)

    return copy


class RangeBudget:
    """The buffers every ranged reader of one storage shares: at most ``concurrency`` at a
    time, each of at most ``part_size`` bytes.

    A buffer given back is kept for the next range while any reader is open (allocating and
    faulting in a part's pages for every range costs time), and dropped once none is.
    ``held`` and ``peak`` count the bytes of every buffer that exists, lent or kept.
    """

    def __init__(self, concurrency: int, part_size: int) -> None:
        if concurrency < 1 or part_size < 1:
            raise ValueError(f"bad range budget: {concurrency} x {part_size}")
        self.concurrency = concurrency
        self.part_size = part_size
        self.held = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._free = concurrency
        self._spare: list[bytearray] = []
        #: Readers with ranges not yet started, in the order they were opened.
        self._queue: list[RangedReader] = []
        self._open = 0

    def _lend(self, reader: RangedReader) -> tuple[int, bytearray] | None:
        """A buffer for ``reader``'s next range and that range's index, once it is the
        reader's turn; None when it has no range left to start or has stopped."""
        with self._cond:
            while not reader._stop.is_set() and reader._started < reader._count:
                if self._free and self._queue[0] is reader:
                    break
                self._cond.wait()
            else:
                return None
            self._free -= 1
            index = reader._started
            reader._started += 1
            if reader._started == reader._count:
                self._queue.remove(reader)
                self._cond.notify_all()  # the next reader's turn
            if self._spare:
                return index, self._spare.pop()
            # Only when none is kept: so no more than ``concurrency`` buffers ever exist.
            buffer = bytearray(reader._length(index))
            self.held += len(buffer)
            self.peak = max(self.peak, self.held)
            return index, buffer

    def _give_back(self, buffer: bytearray) -> None:
        with self._cond:
            self._free += 1
            if self._open and len(buffer) == self.part_size:
                self._spare.append(buffer)
            else:
                self.held -= len(buffer)
            self._cond.notify_all()

    def _add(self, reader: RangedReader) -> None:
        with self._cond:
            self._open += 1
            if reader._count:
                self._queue.append(reader)

    def _remove(self, reader: RangedReader) -> None:
        with self._cond:
            self._open -= 1
            if not self._open:
                self.held -= sum(len(b) for b in self._spare)
                self._spare.clear()
            self._cond.notify_all()


class RangedReader(io.RawIOBase):
    """An object of ``size`` bytes read as concurrent ranges; see the module docstring.

    ``fill(part)`` is one attempt at a range (it calls ``part.read_from`` on the response's
    body, and may check the range further); ``retrying`` repeats it on transient failures;
    ``describe`` turns the failure that ends the read into the user's ``StorageError``;
    ``finish``, if given, runs when the consumer reaches the end, and may refuse it.
    """

    def __init__(
        self,
        size: int,
        fill: Callable[[Part], None],
        budget: RangeBudget,
        *,
        retrying: Retrying,
        describe: Callable[[Exception], Exception],
        throttle: Throttle = UNLIMITED,
        finish: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._size = size
        self._fill = fill
        self._budget = budget
        self._retrying = retrying
        self._describe = describe
        self._throttle = throttle
        self._finish = finish
        self._count = -(-size // budget.part_size)
        #: Guarded by the budget's lock: ranges started, ranges fetched and not yet read.
        self._started = 0
        self._ready: dict[int, bytearray] = {}
        self._failure: Exception | None = None
        self._stop = threading.Event()
        #: The consumer's side: the range being read, its buffer and how far it is read.
        self._index = 0
        self._buffer: bytearray | None = None
        self._at = 0
        self._ended = False
        budget._add(self)
        self._workers = [
            threading.Thread(target=self._work, name="btrsendd-range", daemon=True)
            for _ in range(min(budget.concurrency, self._count))
        ]
        for worker in self._workers:
            worker.start()

    def _length(self, index: int) -> int:
        part = self._budget.part_size
        return min(part, self._size - index * part)

    def readable(self) -> bool:
        return True

    # -- the workers -----------------------------------------------------------------------

    def _work(self) -> None:
        while (lent := self._budget._lend(self)) is not None:
            index, buffer = lent
            part = Part(
                index * self._budget.part_size,
                memoryview(buffer)[: self._length(index)],
                self._throttle,
                self._stop,
            )
            try:
                self._retrying(partial(self._attempt, part), self._pause)
            except Exception as exc:
                part.view.release()
                self._budget._give_back(buffer)
                self._fail(exc)
                return
            part.view.release()
            with self._budget._cond:
                if not self._stop.is_set():
                    self._ready[index] = buffer
                    self._budget._cond.notify_all()
                    continue
            self._budget._give_back(buffer)

    def _attempt(self, part: Part) -> None:
        if self._stop.is_set():
            raise Cancelled
        self._fill(part)

    def _pause(self, seconds: float) -> None:
        """A wait between attempts that a close cuts short."""
        self._stop.wait(seconds)

    def _fail(self, exc: Exception) -> None:
        with self._budget._cond:
            if self._failure is None and not isinstance(exc, Cancelled):
                self._failure = exc
            self._stop.set()  # no new range is started, running ones stop
            if self in self._budget._queue:  # the next reader's turn
                self._budget._queue.remove(self)
            self._budget._cond.notify_all()

    # -- the consumer ----------------------------------------------------------------------

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        if self._buffer is None and not self._next():
            return 0
        assert self._buffer is not None
        length = self._length(self._index)
        count = min(len(view), length - self._at)
        view[:count] = memoryview(self._buffer)[self._at : self._at + count]
        self._at += count
        if self._at == length:
            self._budget._give_back(self._buffer)
            self._buffer = None
            self._index += 1
        return count

    def _next(self) -> bool:
        """Wait for the next range; False at the end of the object."""
        failure: Exception | None = None
        with self._budget._cond:
            while True:
                if self._failure is not None:
                    failure = self._failure
                    break
                if self._index == self._count:
                    break
                if self._index in self._ready:
                    self._buffer = self._ready.pop(self._index)
                    self._at = 0
                    return True
                self._budget._cond.wait()
        if failure is not None:
            raise self._describe(failure) from failure
        if not self._ended and self._finish is not None:
            try:
                self._finish()
            except Exception as exc:
                self._failure = exc
                raise self._describe(exc) from exc
        self._ended = True
        return False

    def close(self) -> None:
        if self.closed:
            return
        self._fail(Cancelled())
        with self._budget._cond:
            kept = [*self._ready.values(), *([self._buffer] if self._buffer is not None else [])]
            self._ready.clear()
            self._buffer = None
        for buffer in kept:
            self._budget._give_back(buffer)
        # Fetches stop at their next chunk or retry wait; only a stalled read takes longer,
        # up to the client's read timeout.
        for worker in self._workers:
            worker.join()
        self._budget._remove(self)
        super().close()

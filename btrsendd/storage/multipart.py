"""Multipart uploads, as the S3 and vault backends both do them.

A stream of unknown length is read part by part and each part is uploaded while the next is
read, several at once, so memory stays at ``concurrency`` parts whatever the stream's length.
A stream shorter than one part is stored with one request instead of three.  An upload that
cannot finish, for whatever reason (a failed part, a failing stream, a signal), is aborted:
an open multipart upload is invisible in listings but is billed until someone aborts it.

The services differ only in their requests, part sizes and limits: a backend subclasses
``MultipartUpload`` once per object with those, and ``store`` does the rest.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from btrsendd.errors import StorageError
from btrsendd.storage.base import Readable
from btrsendd.storage.common import fill, read_block

#: What uploading one part yields, to be handed to ``complete`` (S3: the part's number, ETag
#: and checksum; a vault: its tree hash).
P = TypeVar("P")
#: What storing the object yields.
R = TypeVar("R")


class MultipartUpload(ABC, Generic[P, R]):
    """One object's upload, in the requests of one service."""

    #: How many parts are read ahead of their upload or being uploaded, at most.
    concurrency: int
    #: Names the part-uploading threads (for thread dumps).
    thread_name: str
    #: Whether a part is sent as a copy (``bytes``) rather than the buffer it was read into:
    #: the copy is made before its upload starts, so that the buffer is read into again at
    #: once and memory stays at ``concurrency`` parts.
    copies_parts = False

    @abstractmethod
    def part_size(self, number: int) -> int:
        """The size of part ``number`` (1-based); the last part may be shorter."""

    @abstractmethod
    def max_parts(self) -> int:
        """The most parts the service accepts for one object."""

    @abstractmethod
    def too_many_parts(self, total: int) -> StorageError:
        """The error for a stream that needs more than ``max_parts`` (``total`` bytes read)."""

    @abstractmethod
    def single(self, data: bytearray) -> R:
        """Store a stream shorter than one part with one request."""

    @abstractmethod
    def begin(self) -> None:
        """Start the multipart upload."""

    @abstractmethod
    def send(self, number: int, offset: int, data: bytes | bytearray) -> P:
        """Upload part ``number``, which starts ``offset`` bytes into the object."""

    @abstractmethod
    def complete(self, parts: list[P], total: int) -> R:
        """Complete the upload of ``total`` bytes from its parts, in order."""

    @abstractmethod
    def abort(self) -> None:
        """Abort the upload, best effort: the caller is already reporting a failure."""

    @abstractmethod
    def error(self, exc: Exception) -> StorageError:
        """``exc`` as the user's one-line message about this upload."""


def store(stream: Readable, upload: MultipartUpload[P, R]) -> R:
    """Store everything ``stream`` yields with ``upload``; abort it on any failure.

    ``StorageError`` passes unchanged, other failures become ``upload.error``; a
    ``BaseException`` (KeyboardInterrupt, ``Interrupted``) aborts the upload too, since an
    abandoned upload is billed forever, and passes unchanged.
    """
    try:
        size = upload.part_size(1)
        first = read_block(stream, size)
        if len(first) < size:
            return upload.single(first)
        upload.begin()
        # Handed over in a list so that this frame drops its reference and the first part's
        # memory is freed (or reused) once that part is uploaded.
        handoff = [first]
        del first
        try:
            parts, total = _send_parts(upload, stream, handoff)
            return upload.complete(parts, total)
        except BaseException:
            upload.abort()
            raise
    except StorageError:
        raise
    except Exception as exc:
        raise upload.error(exc) from exc


def _send_parts(
    upload: MultipartUpload[P, R], stream: Readable, handoff: list[bytearray]
) -> tuple[list[P], int]:
    """Read parts one by one and upload them concurrently; returns (parts, bytes).

    A semaphore counts the parts read and not yet uploaded, the one being read included, so
    at most ``concurrency`` exist at once.  A buffer whose part has been sent is read into
    again for a later part, so memory is allocated once per object rather than once per
    part (and never fragments into more than that).  After a failure no new part is read;
    parts already running finish (or fail) before this returns, so the caller's abort
    really is last.
    """
    slots = threading.Semaphore(upload.concurrency)
    spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    failed = threading.Event()
    futures: list[Future[P]] = []

    def send(number: int, offset: int, data: bytes | bytearray, buffer: bytearray | None) -> P:
        try:
            return upload.send(number, offset, data)
        except BaseException:
            failed.set()
            raise
        finally:
            if buffer is not None:
                spare.put(buffer)
            slots.release()

    pool = ThreadPoolExecutor(max_workers=upload.concurrency, thread_name_prefix=upload.thread_name)
    try:
        slots.acquire()
        block = handoff.pop()
        number, total = 1, 0
        while True:
            size = len(block)
            if upload.copies_parts:
                data: bytes | bytearray = bytes(block)
                spare.put(block)
                futures.append(pool.submit(send, number, total, data, None))
                del data  # the worker owns it now
            else:
                futures.append(pool.submit(send, number, total, block, block))
            del block  # the worker owns it now
            total += size
            if size < upload.part_size(number):
                break  # a short part is the last
            number += 1
            size = upload.part_size(number)
            slots.acquire()
            if failed.is_set():
                break
            try:
                block = spare.get_nowait()
            except queue.Empty:
                block = bytearray(size)
            if len(block) != size:  # the part size has grown, or this was a last part
                block = bytearray(size)
            filled = fill(stream, memoryview(block))
            if not filled:
                slots.release()
                break
            if number > upload.max_parts():
                raise upload.too_many_parts(total)
            del block[filled:]  # the last part: exactly its bytes
        return [f.result() for f in futures], total
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

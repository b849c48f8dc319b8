"""Reading an S3 object as a file: resumed where a broken connection left it, and failing
with ``StorageError`` like every other request of the backend."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import StorageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef


class ResumingBody:
    """A GetObject body that picks up where a broken connection left it.

    A restore reads each volume for minutes; a reset or a stalled read is retried (within the
    budget) by a ranged GET from the first byte not yet returned, so a dropped connection costs
    a reconnect instead of the restore.  ``If-Match`` on the ETag makes the range come from the
    same object: keys are never rewritten, but if one were, splicing two objects must fail.
    """

    def __init__(
        self,
        first: GetObjectOutputTypeDef,
        reopen: Callable[[str, int], StreamingBody],
        retrying: Callable[[Callable[[], bytes]], bytes],
    ) -> None:
        self._body: StreamingBody | None = first["Body"]
        self._etag = first["ETag"]
        self._reopen = reopen
        self._retrying = retrying
        self._position = 0

    def read(self, size: int) -> bytes:
        data = self._retrying(partial(self._read_once, size))
        self._position += len(data)
        return data

    def _read_once(self, size: int) -> bytes:
        if self._body is None:
            self._body = self._reopen(self._etag, self._position)
        try:
            return self._body.read(size)
        except BotoCoreError:
            self.close()  # the next attempt reconnects at self._position
            raise

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class BodyReader(io.RawIOBase):
    """A GetObject body as a file, failing with ``StorageError`` like everything here.

    Restore reads volumes for minutes; a connection dropped halfway (or botocore's checksum
    check failing at the end) must reach the user as one clear line, not a botocore trace.
    """

    def __init__(self, body: ResumingBody, describe: Callable[[Exception], StorageError]) -> None:
        super().__init__()
        self._body = body
        self._describe = describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except (BotoCoreError, ClientError) as exc:
            raise self._describe(exc) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()

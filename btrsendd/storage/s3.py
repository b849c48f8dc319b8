"""S3 and S3-compatible object storage, with cold storage classes and restore requests.

Volumes stream in with multipart uploads whose parts are read one at a time and uploaded
concurrently, so memory stays at ``concurrency x part_size`` whatever the stream's length.
Every part and every small object carries a SHA-256 checksum the server verifies before it
accepts the bytes; a corrupted part is refused there, not discovered at restore time.  An
upload that cannot finish is aborted: an open multipart upload is invisible in listings but
is billed until someone aborts it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage.awserrors import (
    ABORT_ATTEMPTS,
    CHECK_CREDENTIALS,
    NO_CREDENTIALS,
    RETRY_BUDGET,
    RETRY_DELAY,
    RETRY_MAX_DELAY,
    AwsRequests,
    cause,
    error_code,
    is_transient,
)
from btrsendd.storage.base import ObjectInfo, Readable, Stored, ThawState, Tier
from btrsendd.storage.common import check_key, fill, read_block

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import StorageClassType
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        GetObjectOutputTypeDef,
        ListObjectsV2OutputTypeDef,
        ObjectIdentifierTypeDef,
    )

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

#: S3's multipart rules: parts of 5 MiB to 5 GiB (the last may be smaller), 10,000 at most.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000

#: The part size doubles after this many parts.  900 (not a rounder 1,000) is what lets the
#: smallest allowed part size, 5 MiB, still fit more than 5 TiB (S3's classic object size
#: limit) into 10,000 parts: 9.2 TiB, where 1,000 would stop at 4.9 TiB.
PART_GROWTH_INTERVAL = 900

#: DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1000
#: ``Stored.checksum`` names its algorithm, so a later change of algorithm reads as a change.
CHECKSUM_PREFIX = "sha256:"

#: The retry policy (``RETRY_BUDGET``, ``RETRY_MAX_DELAY``, ``ABORT_ATTEMPTS``) is the AWS
#: backends' shared one (``awserrors``).  Every request is retried this way (``_retrying``),
#: except ``check_access``, which answers a person running ``check-config`` at once; an abort
#: that fails anyway is swept up by ``abort_incomplete_uploads`` at the next cycle.  Read at
#: construction, so that tests can shorten the waits here.
UPLOAD_RETRY_DELAY = RETRY_DELAY
#: botocore's socket timeouts.  Its 60 s default to connect would let a dead endpoint use up
#: the budget in a handful of attempts; 60 s to read still lets a busy endpoint answer a part.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: Said when retrying gave up, after the endpoint's last error.
_GAVE_UP_ADVICE = "an interrupted backup resumes from its last stored volume at the next cycle"

#: Classes whose objects need a restore request before they can be read.  GLACIER_IR is
#: archived-priced but instantly readable, so it is not among them.
ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

#: Error codes that mean "the credentials are wrong or may not do this".
_ACCESS_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)

#: Client errors worth retrying: corruption in transit, a slow client, throttling.
_TRANSIENT_CODES = frozenset(
    {
        "BadDigest",
        "RequestTimeout",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
    }
)

_ONGOING_RE = re.compile(r'ongoing-request\s*=\s*"(true|false)"')


def part_size_for(part_number: int, base: int) -> int:
    """The size of part ``part_number`` (1-based) of a multipart upload starting at ``base``.

    The size doubles every ``PART_GROWTH_INTERVAL`` parts, capped at ``MAX_PART_SIZE``: a 1 GiB
    volume uploads in small parts, and a stream of unknown length can still grow to 5 TiB.
    Memory follows the current part size, so it grows (as ``concurrency x part size``) only
    for streams past ``PART_GROWTH_INTERVAL x base``.
    """
    return min(base << ((part_number - 1) // PART_GROWTH_INTERVAL), MAX_PART_SIZE)


def thaw_state_from_head(storage_class: str | None, restore: str | None) -> ThawState:
    """Interpret HeadObject's ``StorageClass`` and ``Restore`` fields.

    ``Restore`` is absent until a restore is requested, then reads ``ongoing-request="true"``
    while the restore runs and ``ongoing-request="false", expiry-date="..."`` once the
    temporary copy is readable; S3 drops it again when that copy expires.
    """
    if storage_class not in ARCHIVED_CLASSES:
        return "readable"
    match = _ONGOING_RE.search(restore or "")
    if match is None:
        return "archived"
    return "pending" if match.group(1) == "true" else "readable"


def sha256_b64(data: bytes | bytearray) -> str:
    """The ``x-amz-checksum-sha256`` form of a digest: base64 of the raw 32 bytes."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def composite_checksum(part_checksums: Sequence[str]) -> str:
    """The checksum S3 reports for a multipart object: a checksum of the part checksums.

    SHA-256 over the concatenated raw part digests, base64, then ``-`` and the part count.
    It is what ``verify`` can compare for free (HEAD), since S3 keeps no whole-object
    SHA-256 for a multipart upload.
    """
    joined = b"".join(base64.b64decode(c) for c in part_checksums)
    return f"{sha256_b64(joined)}-{len(part_checksums)}"


class _ResumingBody:
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


class _BodyReader(io.RawIOBase):
    """A GetObject body as a file, failing with ``StorageError`` like everything here.

    Restore reads volumes for minutes; a connection dropped halfway (or botocore's checksum
    check failing at the end) must reach the user as one clear line, not a botocore trace.
    """

    def __init__(self, body: _ResumingBody, describe: Callable[[Exception], StorageError]) -> None:
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


class S3Storage(AwsRequests):
    """The ``Storage`` protocol on one S3 bucket (AWS or an S3-compatible endpoint).

    Credentials come from boto3's standard chain (environment, ``~/.aws``, instance role),
    never from arguments, so they cannot end up in a config file or a message.  botocore
    refreshes credentials that expire (assumed roles, instance and container roles, SSO) before
    they do; static keys that expired fail at once as "access denied".

    Retrying is done here, under ``retry_budget`` seconds per request (see ``RETRY_BUDGET``);
    ``max_attempts`` is botocore's own total attempts per request, 1 by default so that the two
    layers do not multiply and every retry is logged (``storage.retrying``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        storage_class: StorageClassType = "DEEP_ARCHIVE",
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        part_size: int = 16 * MiB,
        concurrency: int = 4,
        max_attempts: int = 1,
        retry_budget: float = RETRY_BUDGET,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be 5 MiB..5 GiB, not {part_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.bucket = bucket
        self.storage_class = storage_class
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.concurrency = concurrency
        self.retry_budget = retry_budget
        # Read here, not at import, so that tests can shorten them.
        self.retry_delay = UPLOAD_RETRY_DELAY
        self.retry_max_delay = RETRY_MAX_DELAY
        self.description = f"s3://{bucket}" + (f" at {endpoint_url}" if endpoint_url else "")
        config = Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # One connection per part in flight, plus the main thread's requests.
            max_pool_connections=max(10, concurrency + 1),
            # We send SHA-256 ourselves; botocore's default CRC trailers (aws-chunked
            # bodies) are not understood by every S3-compatible server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Self-hosted servers rarely have wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # One client for all threads: boto3 clients are thread-safe (sessions are not).
        self._client: S3Client = boto3.session.Session().client(
            "s3", region_name=region, endpoint_url=endpoint_url, config=config
        )

    # -- errors ----------------------------------------------------------------------------

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _error(self, what: str, exc: Exception) -> StorageError:
        """One line for the user: what failed and, for the usual causes, what to do.

        Only the endpoint's error code and message are used, never request details, so no
        credential or signature can leak into logs.  When retrying gave up, the line also says
        for how long it tried (``retry_call``'s note) and that nothing is lost.
        """
        notes = getattr(exc, "__notes__", [])
        gave_up = "".join(f"; {note}" for note in [*notes, _GAVE_UP_ADVICE]) if notes else ""
        return StorageError(self._explain(what, exc) + gave_up)

    def _explain(self, what: str, exc: Exception) -> str:
        if isinstance(exc, ClientError):
            code = error_code(exc)
            if code == "NoSuchBucket":
                return (
                    f"{what} failed: bucket {self.bucket!r} does not exist"
                    + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                    + ": create it or fix storage.bucket"
                )
            if code in _ACCESS_CODES:
                return (
                    f"{what} failed: access denied ({cause(exc)}); {CHECK_CREDENTIALS} "
                    "and the bucket's permissions"
                )
            return f"{what} failed: {cause(exc)}"
        if isinstance(exc, NoCredentialsError):
            return f"{what} failed: {NO_CREDENTIALS}"
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            endpoint = self.endpoint_url or "the S3 endpoint"
            return f"{what} failed: cannot reach {endpoint}: {exc}"
        return f"{what} failed: {exc}"

    def _retryable(self, exc: Exception) -> bool:
        return is_transient(exc, _TRANSIENT_CODES)

    # -- writing ---------------------------------------------------------------------------

    def _put_object(
        self, key: str, data: bytearray | bytes, storage_class: StorageClassType
    ) -> str:
        """PUT ``data`` whole; returns its checksum in ``Stored.checksum`` form."""
        checksum = sha256_b64(data)
        self._retrying(
            f"upload of {self._url(key)}",
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                # botocore accepts bytearray (see its validate.py); the stubs say bytes only.
                Body=cast(bytes, data),
                StorageClass=storage_class,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            ),
        )
        return CHECKSUM_PREFIX + checksum

    def put_stream(self, key: str, stream: Readable) -> Stored:
        what = f"upload of {self._url(check_key(key))}"
        try:
            block = read_block(stream, self.part_size)
            if len(block) < self.part_size:
                # Shorter than one part: a plain PUT costs one request instead of three.
                return Stored(len(block), self._put_object(key, block, self.storage_class))
        except Exception as exc:
            raise self._error(what, exc) from exc
        creates = 0

        def create() -> str:
            nonlocal creates
            creates += 1
            return self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                StorageClass=self.storage_class,
                ChecksumAlgorithm="SHA256",
            )["UploadId"]

        with self._translate(what):
            upload_id = self._retrying(what, create)
        # Handed over in a list so that this frame drops its reference and the first part's
        # memory is freed once that part is uploaded.
        handoff = [block]
        del block
        try:
            parts, total = self._upload_parts(key, upload_id, stream, handoff)
            self._complete(what, key, upload_id, parts, total)
        except BaseException as exc:
            # Also on KeyboardInterrupt / SystemExit: an abandoned upload is billed forever.
            self._abort(key, upload_id)
            if isinstance(exc, StorageError):
                raise
            if isinstance(exc, Exception):
                raise self._error(what, exc) from exc
            raise
        if creates > 1:
            # A create whose answer was lost may have opened an upload nobody knows about.
            with contextlib.suppress(StorageError):
                self.abort_incomplete_uploads(key)
        return Stored(
            total, CHECKSUM_PREFIX + composite_checksum([p["ChecksumSHA256"] for p in parts])
        )

    def _complete(
        self, what: str, key: str, upload_id: str, parts: list[CompletedPartTypeDef], total: int
    ) -> None:
        """Complete the upload; a retry whose first attempt succeeded unseen counts as done."""
        attempts = 0

        def complete() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except ClientError as exc:
                # Once completed, the upload is gone and the object is there, whole.
                if attempts == 1 or error_code(exc) != "NoSuchUpload" or not self._has(key, total):
                    raise

        self._retrying(what, complete)

    def _has(self, key: str, size: int) -> bool:
        """Whether ``key`` is stored with ``size`` bytes."""
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"] == size
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def _upload_parts(
        self, key: str, upload_id: str, stream: Readable, handoff: list[bytearray]
    ) -> tuple[list[CompletedPartTypeDef], int]:
        """Read parts one by one and upload them concurrently; returns (parts, bytes).

        At most ``concurrency`` part buffers exist, the one being filled included.  A buffer
        whose upload has ended is filled again for a later part, so memory is allocated once
        per volume rather than once per part (and never fragments into more than that).
        After a failure no new part is read; parts already running finish (or fail) before
        this returns, so the caller's abort really is last.
        """
        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        failed = threading.Event()
        futures: list[Future[CompletedPartTypeDef]] = []

        def upload(number: int, block: bytearray) -> CompletedPartTypeDef:
            try:
                return self._upload_part(key, upload_id, number, block)
            except BaseException:
                failed.set()
                raise
            finally:
                free.put(block)

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="s3-part")
        try:
            block = handoff.pop()
            number, total, buffers = 1, len(block), 1
            futures.append(pool.submit(upload, number, block))
            del block  # the worker owns it now
            while True:
                number += 1
                if number > MAX_PARTS:
                    raise StorageError(
                        f"upload of {self._url(key)} failed: the stream exceeds "
                        f"{MAX_PARTS} parts (over {total / TiB:.1f} TiB), S3's limit for one "
                        "object; lower pipeline.volume_size"
                    )
                size = part_size_for(number, self.part_size)
                if buffers < self.concurrency:
                    buffers += 1
                    block = bytearray(size)
                else:
                    block = free.get()  # waits for an upload to end
                    if len(block) != size:  # the part size has grown
                        block = bytearray(size)
                if failed.is_set():
                    break
                filled = fill(stream, memoryview(block))
                if not filled:
                    break
                if filled < size:
                    del block[filled:]  # the last part: exactly its bytes
                total += filled
                futures.append(pool.submit(upload, number, block))
                del block
                if filled < size:
                    break
            return [f.result() for f in futures], total
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytearray
    ) -> CompletedPartTypeDef:
        checksum = sha256_b64(data)
        response = self._retrying(
            f"upload of {self._url(key)} part {number}",
            lambda: self._client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=cast(bytes, data),  # bytearray: see _put_object
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            ),
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort an upload, best effort.

        The caller is already reporting the real failure, and ``abort_incomplete_uploads``
        sweeps up whatever an unreachable endpoint left behind.
        """
        with contextlib.suppress(ClientError, BotoCoreError):
            self._retrying(
                f"abort of the upload of {self._url(key)}",
                lambda: self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
                attempts=ABORT_ATTEMPTS,
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._translate(f"upload of {self._url(check_key(key))}"):
            self._put_object(key, data, "STANDARD")

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as body:
            return body.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        what = f"download of {self._url(check_key(key))}"
        try:
            # ChecksumMode makes botocore check a whole-object SHA-256 at the end of the
            # body; multipart objects carry a checksum of checksums, which it skips.
            response = self._retrying(
                what,
                lambda: self._client.get_object(
                    Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                ),
            )
        except ClientError as exc:
            if error_code(exc) == "InvalidObjectState":
                raise NotThawedError(
                    f"{self._url(key)} is archived in cold storage; request a restore and "
                    "wait for it before reading"
                ) from None
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc
        resuming = _ResumingBody(
            response, partial(self._get_from, key), partial(self._retrying, what)
        )
        body = _BodyReader(resuming, lambda exc: self._error(what, exc))
        with io.BufferedReader(body) as reader:
            yield reader

    def _get_from(self, key: str, etag: str, start: int) -> StreamingBody:
        """The rest of ``key`` from byte ``start``, if it is still the object with ``etag``."""
        return self._client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-", IfMatch=etag
        )["Body"]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        what = f"listing {self._url(prefix)}"
        token: str | None = None
        while True:
            # Page by page, each retried on its own: a long listing must not start over.
            with self._translate(what):
                page = self._retrying(what, partial(self._list_page, prefix, token))
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"], obj["Size"], obj.get("StorageClass", "STANDARD"))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def _list_page(self, prefix: str, token: str | None) -> ListObjectsV2OutputTypeDef:
        if token is None:
            return self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return self._client.list_objects_v2(
            Bucket=self.bucket, Prefix=prefix, ContinuationToken=token
        )

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": check_key(k)} for k in keys[start : start + DELETE_BATCH]
            ]
            what = f"deleting from {self.description}"
            with self._translate(what):
                response = self._retrying(
                    what,
                    partial(
                        self._client.delete_objects,
                        Bucket=self.bucket,
                        Delete={"Objects": batch, "Quiet": True},
                    ),
                )
            # DeleteObjects answers 200 even when keys fail; the failures are in the body.
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"deleting from {self.description} failed for {len(errors)} key(s), e.g. "
                    f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}"
                )

    # -- cold storage ----------------------------------------------------------------------

    def thaw_state(self, key: str) -> ThawState:
        what = f"checking {self._url(check_key(key))}"
        with self._translate(what):
            head = self._retrying(
                what, lambda: self._client.head_object(Bucket=self.bucket, Key=key)
            )
        return thaw_state_from_head(head.get("StorageClass"), head.get("Restore"))

    def checksum(self, key: str) -> str | None:
        """The SHA-256 checksum S3 keeps for ``key`` (HEAD: free, even for archived objects).

        None when the object has none: it was not written by ``put_stream``, or was
        replaced since.
        """
        what = f"checking {self._url(check_key(key))}"
        with self._translate(what):
            head = self._retrying(
                what,
                lambda: self._client.head_object(
                    Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                ),
            )
        value = head.get("ChecksumSHA256")
        return None if value is None else CHECKSUM_PREFIX + value

    def request_thaw(self, key: str, tier: Tier, days: int) -> None:
        what = f"restore request for {self._url(check_key(key))}"
        try:
            self._retrying(
                what,
                lambda: self._client.restore_object(
                    Bucket=self.bucket,
                    Key=key,
                    RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
                ),
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == "RestoreAlreadyInProgress":
                return
            if code in ("MethodNotAllowed", "NotImplemented"):
                raise StorageError(
                    f"{self.description} does not support restore requests ({code}); "
                    "S3-compatible servers keep every class readable, so store there with "
                    'storage.storage_class = "STANDARD"'
                ) from exc
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc

    # -- maintenance -----------------------------------------------------------------------

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Abort every unfinished multipart upload under ``prefix``; returns how many.

        For uploads a crash or an unreachable endpoint left behind: S3 bills their parts
        until they are aborted (or a lifecycle rule does it).
        """
        what = f"cleaning up uploads in {self._url(prefix)}"

        def sweep() -> int:
            # Retried as a whole: aborting again what is already aborted is harmless.
            uploads = self._list_uploads(prefix)
            for key, upload_id in uploads:
                try:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                except ClientError as exc:
                    if error_code(exc) != "NoSuchUpload":  # finished meanwhile
                        raise
            return len(uploads)

        with self._translate(what):
            return self._retrying(what, sweep)

    def incomplete_uploads(self, prefix: str) -> Sequence[str]:
        """The keys of unfinished multipart uploads under ``prefix`` (one per upload)."""
        what = f"listing uploads in {self._url(prefix)}"
        with self._translate(what):
            uploads = self._retrying(what, partial(self._list_uploads, prefix))
        return [key for key, _ in uploads]

    def _list_uploads(self, prefix: str) -> Sequence[tuple[str, str]]:
        """(key, upload id) of every unfinished multipart upload under ``prefix``."""
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]

    def check_access(self) -> None:
        """Fail early, with advice, when the bucket is missing or the credentials are wrong."""
        with self._translate(f"access check on {self.description}"):
            self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)

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
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage.base import ObjectInfo, Readable, ThawState, Tier
from btrsendd.storage.common import check_key, read_block
from btrsendd.storage.retry import retry_call

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import StorageClassType
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

T = TypeVar("T")

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

#: Retries of a whole part (or small object) upload on top of botocore's per-request ones: a
#: part is worth minutes of the pipeline's work, so riding out an endpoint restart beats
#: failing the volume.
UPLOAD_ATTEMPTS = 4
UPLOAD_RETRY_DELAY = 1.0

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

#: Client errors worth retrying a whole part for: corruption in transit, a slow client.
_TRANSIENT_CODES = frozenset({"BadDigest", "RequestTimeout", "SlowDown"})

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


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_transient(exc: Exception) -> bool:
    """Whether trying the same request again may succeed: network trouble or a 5xx."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or _error_code(exc) in _TRANSIENT_CODES
    return False


class _BodyReader(io.RawIOBase):
    """A GetObject body as a file, failing with ``StorageError`` like everything here.

    Restore reads volumes for minutes; a connection dropped halfway (or botocore's checksum
    check failing at the end) must reach the user as one clear line, not a botocore trace.
    """

    def __init__(self, body: StreamingBody, describe: Callable[[Exception], StorageError]) -> None:
        super().__init__()
        self._body = body
        self._describe = describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except BotoCoreError as exc:
            raise self._describe(exc) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3Storage:
    """The ``Storage`` protocol on one S3 bucket (AWS or an S3-compatible endpoint).

    Credentials come from boto3's standard chain (environment, ``~/.aws``, instance role),
    never from arguments, so they cannot end up in a config file or a message.
    ``max_attempts`` is botocore's total attempts per request (its "standard" retry mode).
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
        max_attempts: int = 5,
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
        self.description = f"s3://{bucket}" + (f" at {endpoint_url}" if endpoint_url else "")
        config = Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
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
        credential or signature can leak into logs.
        """
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            message = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
            if code == "NoSuchBucket":
                return StorageError(
                    f"{what} failed: bucket {self.bucket!r} does not exist"
                    + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                    + ": create it or fix storage.bucket"
                )
            if code in _ACCESS_CODES:
                return StorageError(
                    f"{what} failed: access denied ({code}: {message}); check the AWS "
                    "credentials (environment, ~/.aws, instance role) and the bucket's "
                    "permissions"
                )
            return StorageError(f"{what} failed: {code}: {message}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"{what} failed: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, configure ~/.aws/credentials or use an instance role"
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            endpoint = self.endpoint_url or "the S3 endpoint"
            return StorageError(f"{what} failed: cannot reach {endpoint}: {exc}")
        return StorageError(f"{what} failed: {exc}")

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn botocore's exceptions inside the block into ``StorageError``."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._error(what, exc) from exc

    def _retrying(self, func: Callable[[], T]) -> T:
        return retry_call(
            func, attempts=UPLOAD_ATTEMPTS, base_delay=UPLOAD_RETRY_DELAY, retryable=_is_transient
        )

    # -- writing ---------------------------------------------------------------------------

    def _put_object(
        self, key: str, data: bytearray | bytes, storage_class: StorageClassType
    ) -> None:
        checksum = sha256_b64(data)
        self._retrying(
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                # botocore accepts bytearray (see its validate.py); the stubs say bytes only.
                Body=cast(bytes, data),
                StorageClass=storage_class,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
        )

    def put_stream(self, key: str, stream: Readable) -> int:
        what = f"upload of {self._url(check_key(key))}"
        try:
            block = read_block(stream, self.part_size)
            if len(block) < self.part_size:
                # Shorter than one part: a plain PUT costs one request instead of three.
                self._put_object(key, block, self.storage_class)
                return len(block)
        except Exception as exc:
            raise self._error(what, exc) from exc
        with self._translate(what):
            upload_id = self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                StorageClass=self.storage_class,
                ChecksumAlgorithm="SHA256",
            )["UploadId"]
        # Handed over in a list so that this frame drops its reference and the first part's
        # memory is freed once that part is uploaded.
        handoff = [block]
        del block
        try:
            parts, total = self._upload_parts(key, upload_id, stream, handoff)
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            # Also on KeyboardInterrupt / SystemExit: an abandoned upload is billed forever.
            self._abort(key, upload_id)
            if isinstance(exc, StorageError):
                raise
            if isinstance(exc, Exception):
                raise self._error(what, exc) from exc
            raise
        return total

    def _upload_parts(
        self, key: str, upload_id: str, stream: Readable, handoff: list[bytearray]
    ) -> tuple[list[CompletedPartTypeDef], int]:
        """Read parts one by one and upload them concurrently; returns (parts, bytes).

        A semaphore counts part buffers, the one being read included, so at most
        ``concurrency`` exist at once.  After a failure no new part is read; parts already
        running finish (or fail) before this returns, so the caller's abort really is last.
        """
        slots = threading.Semaphore(self.concurrency)
        failed = threading.Event()
        futures: list[Future[CompletedPartTypeDef]] = []

        def release(future: Future[CompletedPartTypeDef]) -> None:
            slots.release()
            if future.cancelled() or future.exception() is not None:
                failed.set()

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="s3-part")
        try:
            slots.acquire()
            block = handoff.pop()
            number, total = 1, 0
            while True:
                at_end = len(block) < part_size_for(number, self.part_size)
                total += len(block)
                future = pool.submit(self._upload_part, key, upload_id, number, block)
                future.add_done_callback(release)
                futures.append(future)
                del block  # the worker owns it now
                if at_end:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise StorageError(
                        f"upload of {self._url(key)} failed: the stream exceeds "
                        f"{MAX_PARTS} parts (over {total / TiB:.1f} TiB), S3's limit for one "
                        "object; lower pipeline.volume_size"
                    )
                slots.acquire()
                if failed.is_set():
                    break
                block = read_block(stream, part_size_for(number, self.part_size))
                if not block:
                    slots.release()
                    break
            return [f.result() for f in futures], total
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytearray
    ) -> CompletedPartTypeDef:
        checksum = sha256_b64(data)
        response = self._retrying(
            lambda: self._client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=cast(bytes, data),  # bytearray: see _put_object
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort an upload, best effort.

        The caller is already reporting the real failure, and ``abort_incomplete_uploads``
        sweeps up whatever an unreachable endpoint left behind.
        """
        with contextlib.suppress(ClientError, BotoCoreError):
            self._retrying(
                lambda: self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
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
            response = self._client.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _error_code(exc) == "InvalidObjectState":
                raise NotThawedError(
                    f"{self._url(key)} is archived in cold storage; request a restore and "
                    "wait for it before reading"
                ) from None
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc
        body = _BodyReader(response["Body"], lambda exc: self._error(what, exc))
        with io.BufferedReader(body) as reader:
            yield reader

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._translate(f"listing {self._url(prefix)}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], obj["Size"], obj.get("StorageClass", "STANDARD"))

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": check_key(k)} for k in keys[start : start + DELETE_BATCH]
            ]
            with self._translate(f"deleting from {self.description}"):
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": batch, "Quiet": True},
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
        with self._translate(f"checking {self._url(check_key(key))}"):
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        return thaw_state_from_head(head.get("StorageClass"), head.get("Restore"))

    def request_thaw(self, key: str, tier: Tier, days: int) -> None:
        try:
            self._client.restore_object(
                Bucket=self.bucket,
                Key=check_key(key),
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code == "RestoreAlreadyInProgress":
                return
            if code in ("MethodNotAllowed", "NotImplemented"):
                raise StorageError(
                    f"{self.description} does not support restore requests ({code}); "
                    "S3-compatible servers keep every class readable, so store there with "
                    'storage.storage_class = "STANDARD"'
                ) from exc
            raise self._error(f"restore request for {self._url(key)}", exc) from exc
        except BotoCoreError as exc:
            raise self._error(f"restore request for {self._url(key)}", exc) from exc

    # -- maintenance -----------------------------------------------------------------------

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Abort every unfinished multipart upload under ``prefix``; returns how many.

        For uploads a crash or an unreachable endpoint left behind: S3 bills their parts
        until they are aborted (or a lifecycle rule does it).
        """
        count = 0
        with self._translate(f"cleaning up uploads in {self._url(prefix)}"):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    try:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if _error_code(exc) != "NoSuchUpload":  # finished meanwhile
                            raise
                    count += 1
        return count

    def check_access(self) -> None:
        """Fail early, with advice, when the bucket is missing or the credentials are wrong."""
        with self._translate(f"access check on {self.description}"):
            self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)

"""S3 and S3-compatible object storage, with cold storage classes and restore requests.

Volumes stream in as multipart uploads (``upload.py``) with memory bounded at
``concurrency x part_size`` whatever the stream's length, every part checksummed by the
server.  Objects in GLACIER and DEEP_ARCHIVE need a restore request before they can be read
(``base.Thawing``); uploads a crash left open are found and aborted
(``base.IncompleteUploads``).  Versions and Object Lock are in ``versions.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage import multipart
from btrsendd.storage.awserrors import RETRY_BUDGET, RETRY_DELAY, RETRY_MAX_DELAY, error_code
from btrsendd.storage.base import (
    FreeCheck,
    Lock,
    ObjectInfo,
    Readable,
    Stored,
    ThawState,
    Tier,
)
from btrsendd.storage.common import check_key
from btrsendd.storage.ranged import Part, RangeBudget, RangedReader
from btrsendd.storage.s3.client import (
    CHECKSUM_PREFIX,
    CONNECT_TIMEOUT,
    READ_GAVE_UP,
    READ_TIMEOUT,
    version_argument,
)
from btrsendd.storage.s3.upload import MAX_PART_SIZE, MIN_PART_SIZE, MiB, S3Upload
from btrsendd.storage.s3.versions import BucketVersions
from btrsendd.storage.throttle import UNLIMITED, Throttle

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import StorageClassType
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

#: The retry policy (``RETRY_BUDGET``, ``RETRY_MAX_DELAY``, ``ABORT_ATTEMPTS``) is the AWS
#: backends' shared one (``awserrors``).  Every request is retried this way (``_retrying``),
#: except ``check_access``, which answers a person running ``check-config`` at once; an abort
#: that fails anyway is swept up by ``abort_incomplete_uploads`` at the next cycle.  Read at
#: construction, so that tests can shorten the waits here.
UPLOAD_RETRY_DELAY = RETRY_DELAY

#: Classes whose objects need a restore request before they can be read.  GLACIER_IR is
#: archived-priced but instantly readable, so it is not among them.
ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

_ONGOING_RE = re.compile(r'ongoing-request\s*=\s*"(true|false)"')


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


class S3Storage(BucketVersions):
    """The ``Storage`` protocol on one S3 bucket (AWS or an S3-compatible endpoint).

    Retrying is done here, under ``retry_budget`` seconds per request (see ``RETRY_BUDGET``);
    ``max_attempts`` is botocore's own total attempts per request, 1 by default so that the two
    layers do not multiply and every retry is logged (``storage.retrying``).
    """

    #: HEAD reports the SHA-256 checksum recorded at upload, even for archived objects.
    free_check: FreeCheck = "checksum"
    has_readable_class = True

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
        object_lock: bool = False,
        throttle: Throttle = UNLIMITED,
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be 5 MiB..5 GiB, not {part_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        super().__init__(
            bucket,
            region=region,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            max_attempts=max_attempts,
            retry_budget=retry_budget,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            throttle=throttle,
        )
        #: The class volumes are stored in, and recorded in.
        self.storage_class: StorageClassType = storage_class
        self.part_size = part_size
        self.concurrency = concurrency
        #: What every download shares: ``concurrency`` ranges of ``part_size`` in memory.
        self._ranges = RangeBudget(concurrency, part_size)
        #: Whether the configuration locks objects: then the bucket must be able to.
        self.object_lock = object_lock
        # Read here, not at import, so that tests can shorten them.
        self.retry_delay = UPLOAD_RETRY_DELAY
        self.retry_max_delay = RETRY_MAX_DELAY

    # -- writing ---------------------------------------------------------------------------

    def put_stream(
        self, key: str, stream: Readable, lock: Lock | None = None, *, readable: bool = False
    ) -> Stored:
        upload = S3Upload(
            self,
            check_key(key),
            storage_class="STANDARD" if readable else self.storage_class,
            part_size=self.part_size,
            concurrency=self.concurrency,
            lock=lock,
        )
        stored = multipart.store(stream, upload)
        if upload.creates > 1:
            # A create whose answer was lost may have opened an upload nobody knows about.
            with contextlib.suppress(StorageError):
                self.abort_incomplete_uploads(key)
        return self._recorded(stored)

    def put_bytes(self, key: str, data: bytes, lock: Lock | None = None) -> Stored:
        with self._translate(f"upload of {self._url(check_key(key))}"):
            return self._recorded(self._put_object(key, data, "STANDARD", lock))

    def _recorded(self, stored: Stored) -> Stored:
        """``stored`` with the version to record: none unless the bucket is known to keep
        versions.  Credentials that may not ask (a policy written for an older btrsendd)
        may not read a version by id either (s3:GetObjectVersion): reads go by key, as they
        did."""
        if stored.version is None or self.keeps_versions():
            return stored
        return replace(stored, version=None)

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        with self.open_read(key, version) as body:
            return body.read()

    @contextlib.contextmanager
    def open_read(
        self, key: str, version: str | None = None, *, throttle: Throttle = UNLIMITED
    ) -> Iterator[BinaryIO]:
        """The object as ``part_size`` ranges fetched ``concurrency`` at a time (``ranged``),
        each pinned by ``If-Match`` to the ETag the object had when it was opened."""
        what = f"download of {self._url(check_key(key))}"
        size, etag = self._readable(what, key, version)
        reader = RangedReader(
            size,
            partial(self._fill_range, key, version, etag, size),
            self._ranges,
            retrying=lambda attempt, pause: self._retrying(what, attempt, sleep=pause),
            describe=partial(self._read_error, what, key, etag),
            throttle=throttle,
        )
        with io.BufferedReader(reader) as buffered:
            yield buffered

    def _readable(self, what: str, key: str, version: str | None) -> tuple[int, str]:
        """The size and ETag of ``key``, which must be readable now.

        Asked with HEAD, which has no body: opening reads nothing before the budget lends a
        buffer, so it never waits for one.  Where HEAD says the object is archived, a GET of
        its first byte decides: S3-compatible servers report cold classes they do not have,
        and serve the objects anyway.
        """
        try:
            head = self._retrying(
                what,
                lambda: self._client.head_object(
                    Bucket=self.bucket, Key=key, **version_argument(version)
                ),
            )
            size, etag = head["ContentLength"], head["ETag"]
            state = thaw_state_from_head(head.get("StorageClass"), head.get("Restore"))
            if size and state != "readable":
                self._retrying(
                    what,
                    lambda: self._client.get_object(
                        Bucket=self.bucket, Key=key, Range="bytes=0-0", **version_argument(version)
                    )["Body"].close(),
                )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                which = "" if version is None else f" version {version}"
                raise StorageError(f"{what} failed: there is no such object{which}") from None
            raise self._read_error(what, key, "", exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc, gave_up=READ_GAVE_UP) from exc
        return size, etag

    def _not_thawed(self, key: str) -> NotThawedError:
        return NotThawedError(
            f"{self._url(key)} is archived in cold storage; request a restore and wait for it "
            "before reading"
        )

    def _fill_range(self, key: str, version: str | None, etag: str, size: int, part: Part) -> None:
        """One attempt at ``part`` of ``key``, if it is still the object with ``etag``.

        An object that is one range is asked for whole, so that botocore checks its SHA-256
        (``ChecksumMode``) at the end of the body; a range has no checksum of its own, and
        multipart objects a checksum of checksums, which botocore skips.
        """
        asked: dict[str, Any] = {"Range": f"bytes={part.start}-{part.end}"}
        if part.start == 0 and part.end == size - 1:
            asked = {"ChecksumMode": "ENABLED"}
        response = self._client.get_object(
            Bucket=self.bucket, Key=key, IfMatch=etag, **asked, **version_argument(version)
        )
        with contextlib.closing(response["Body"]) as body:
            part.read_from(body)

    def _read_error(self, what: str, key: str, etag: str, exc: Exception) -> Exception:
        """The line a download that failed for good ends with."""
        if isinstance(exc, StorageError):
            return StorageError(f"{what} failed: {exc}")
        if isinstance(exc, ClientError):
            if error_code(exc) == "InvalidObjectState":  # archived since it was opened
                return self._not_thawed(key)
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                return StorageError(
                    f"{what} failed: the object was replaced while it was read (its ETag is no "
                    f"longer {etag}), so nothing of the new one was mixed in; find out who "
                    "writes to the bucket, then run the command again"
                )
        return self._error(what, exc, gave_up=READ_GAVE_UP)

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
        self._delete_objects([{"Key": check_key(k)} for k in keys])

    # -- cold storage ----------------------------------------------------------------------

    def thaw_state(self, key: str, version: str | None = None) -> ThawState:
        what = f"checking {self._url(check_key(key))}"
        with self._translate(what):
            head = self._retrying(
                what,
                lambda: self._client.head_object(
                    Bucket=self.bucket, Key=key, **version_argument(version)
                ),
            )
        return thaw_state_from_head(head.get("StorageClass"), head.get("Restore"))

    def thaw_lifetime(self, days: int) -> timedelta:
        """S3 keeps a restored copy for the days the request asked for."""
        return timedelta(days=days)

    def checksum(self, key: str, version: str | None = None) -> str | None:
        """The SHA-256 checksum S3 keeps for ``key`` (HEAD: free, even for archived objects).

        None when the object has none: it was not written by ``put_stream``, or was
        replaced since.
        """
        what = f"checking {self._url(check_key(key))}"
        with self._translate(what):
            head = self._retrying(
                what,
                lambda: self._client.head_object(
                    Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **version_argument(version)
                ),
            )
        value = head.get("ChecksumSHA256")
        return None if value is None else CHECKSUM_PREFIX + value

    def request_thaw(self, key: str, tier: Tier, days: int, version: str | None = None) -> None:
        what = f"restore request for {self._url(check_key(key))}"
        try:
            self._retrying(
                what,
                lambda: self._client.restore_object(
                    Bucket=self.bucket,
                    Key=key,
                    RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
                    **version_argument(version),
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
        if self.object_lock and (problem := self.lock_problem()) is not None:
            raise StorageError(problem)

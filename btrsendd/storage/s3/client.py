"""One S3 bucket's client, as the storage and its uploads share it: the boto3 client, its
timeouts and retries, what its errors mean, and the requests both make.

Credentials come from boto3's standard chain (environment, ``~/.aws``, instance role), never
from arguments, so they cannot end up in a config file or a message.  botocore refreshes
credentials that expire (assumed roles, instance and container roles, SSO) before they do;
static keys that expired fail at once as "access denied".
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.errors import StorageError
from btrsendd.storage.awserrors import (
    CHECK_CREDENTIALS,
    NO_CREDENTIALS,
    RETRY_BUDGET,
    AwsRequests,
    cause,
    error_code,
    is_transient,
)
from btrsendd.storage.base import Lock, Stored
from btrsendd.storage.throttle import UNLIMITED, Throttle

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import StorageClassType

#: botocore's socket timeouts.  Its 60 s default to connect would let a dead endpoint use up
#: the budget in a handful of attempts; 60 s to read still lets a busy endpoint answer a part.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: Said when retrying gave up, after the endpoint's last error.
_GAVE_UP_ADVICE = "an interrupted backup resumes from its last stored volume at the next cycle"
#: Said when a download gave up: nothing was changed by reading.
READ_GAVE_UP = "nothing was changed; run the same command again once the endpoint answers"
#: ``Stored.checksum`` names its algorithm, so a later change of algorithm reads as a change.
CHECKSUM_PREFIX = "sha256:"

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


class BucketClient(AwsRequests):
    """Requests to one bucket, each retried under ``retry_budget`` seconds (``awserrors``),
    waiting ``retry_delay`` and up to ``retry_max_delay`` between tries (set by the subclass).

    ``max_attempts`` is botocore's own total attempts per request, 1 by default so that the
    two layers do not multiply and every retry is logged (``storage.retrying``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        region: str,
        endpoint_url: str | None,
        concurrency: int,
        max_attempts: int,
        retry_budget: float = RETRY_BUDGET,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        throttle: Throttle = UNLIMITED,
    ) -> None:
        self.bucket = bucket
        #: Paces every byte sent, by every part at once (``pipeline.rate_limit``).
        self.throttle = throttle
        self.endpoint_url = endpoint_url
        self.retry_budget = retry_budget
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

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- errors ----------------------------------------------------------------------------

    def _error(self, what: str, exc: Exception, *, gave_up: str = _GAVE_UP_ADVICE) -> StorageError:
        """One line for the user: what failed and, for the usual causes, what to do.

        Only the endpoint's error code and message are used, never request details, so no
        credential or signature can leak into logs.  When retrying gave up, the line also says
        for how long it tried (``retry_call``'s note) and that nothing is lost.
        """
        notes = getattr(exc, "__notes__", [])
        advice = "".join(f"; {note}" for note in [*notes, gave_up]) if notes else ""
        return StorageError(self._explain(what, exc) + advice)

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

    # -- requests both the storage and its uploads make ------------------------------------

    def _put_object(
        self,
        key: str,
        data: bytearray | bytes,
        storage_class: StorageClassType,
        lock: Lock | None,
    ) -> Stored:
        """PUT ``data`` whole, locked if asked; returns its size, checksum and version."""
        checksum = sha256_b64(data)
        answer = self._retrying(
            f"upload of {self._url(key)}",
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                # botocore accepts bytearray (see its validate.py); the stubs say bytes only.
                Body=cast(bytes, self.throttle.body(data)),
                StorageClass=storage_class,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                **lock_arguments(lock),
            ),
        )
        return Stored(len(data), CHECKSUM_PREFIX + checksum, answer.get("VersionId"))

    def _stored_version(self, key: str, size: int) -> tuple[bool, str | None]:
        """Whether ``key`` is stored with ``size`` bytes, and the version that is."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False, None
            raise
        return head["ContentLength"] == size, head.get("VersionId")


def version_argument(version: str | None) -> dict[str, Any]:
    """A request's ``VersionId`` argument: none asks for the current version."""
    return {} if version is None else {"VersionId": version}


def lock_arguments(lock: Lock | None) -> dict[str, Any]:
    """The arguments that create an object (PUT or multipart) with ``lock``'s retention."""
    if lock is None:
        return {}
    return {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": lock.until}


def sha256_b64(data: bytes | bytearray) -> str:
    """The ``x-amz-checksum-sha256`` form of a digest: base64 of the raw 32 bytes."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")

"""Streams into S3 as multipart uploads (``multipart.py``): part sizes, checksums, requests.

Every part carries a SHA-256 checksum the server verifies before it accepts the bytes; a
corrupted part is refused there, not discovered at restore time.  The part size grows with
the stream, so that a stream of unknown length fits S3's 10,000 parts.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import StorageError
from btrsendd.storage.awserrors import ABORT_ATTEMPTS, error_code
from btrsendd.storage.base import Lock, Stored
from btrsendd.storage.multipart import MultipartUpload
from btrsendd.storage.s3.client import CHECKSUM_PREFIX, BucketClient, lock_arguments, sha256_b64

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import StorageClassType
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

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


def part_size_for(part_number: int, base: int) -> int:
    """The size of part ``part_number`` (1-based) of a multipart upload starting at ``base``.

    The size doubles every ``PART_GROWTH_INTERVAL`` parts, capped at ``MAX_PART_SIZE``: a 1 GiB
    volume uploads in small parts, and a stream of unknown length can still grow to 5 TiB.
    Memory follows the current part size, so it grows (as ``concurrency x part size``) only
    for streams past ``PART_GROWTH_INTERVAL x base``.
    """
    return min(base << ((part_number - 1) // PART_GROWTH_INTERVAL), MAX_PART_SIZE)


def composite_checksum(part_checksums: Sequence[str]) -> str:
    """The checksum S3 reports for a multipart object: a checksum of the part checksums.

    SHA-256 over the concatenated raw part digests, base64, then ``-`` and the part count.
    It is what ``verify`` can compare for free (HEAD), since S3 keeps no whole-object
    SHA-256 for a multipart upload.
    """
    joined = b"".join(base64.b64decode(c) for c in part_checksums)
    return f"{sha256_b64(joined)}-{len(part_checksums)}"


class S3Upload(MultipartUpload["CompletedPartTypeDef", Stored]):
    """One object's upload into ``client``'s bucket, in ``storage_class``, locked if asked
    (S3 locks a multipart object from its creation request)."""

    thread_name = "s3-part"

    def __init__(
        self,
        client: BucketClient,
        key: str,
        *,
        storage_class: StorageClassType,
        part_size: int,
        concurrency: int,
        lock: Lock | None = None,
    ) -> None:
        self.client = client
        self.lock = lock
        self.key = key
        self.storage_class: StorageClassType = storage_class
        self.base_part_size = part_size
        self.concurrency = concurrency
        self.what = f"upload of {client._url(key)}"
        self.upload_id = ""
        #: How many times the upload was created: more than once, a create whose answer was
        #: lost may have opened an upload nobody knows about.
        self.creates = 0

    def part_size(self, number: int) -> int:
        return part_size_for(number, self.base_part_size)

    def max_parts(self) -> int:
        return MAX_PARTS

    def too_many_parts(self, total: int) -> StorageError:
        return StorageError(
            f"{self.what} failed: the stream exceeds {MAX_PARTS} parts (over "
            f"{total / TiB:.1f} TiB), S3's limit for one object; lower pipeline.volume_size"
        )

    def error(self, exc: Exception) -> StorageError:
        return self.client._error(self.what, exc)

    def single(self, data: bytearray) -> Stored:
        # Shorter than one part: a plain PUT costs one request instead of three.
        return self.client._put_object(self.key, data, self.storage_class, self.lock)

    def begin(self) -> None:
        def create() -> str:
            self.creates += 1
            return self.client._client.create_multipart_upload(
                Bucket=self.client.bucket,
                Key=self.key,
                StorageClass=self.storage_class,
                ChecksumAlgorithm="SHA256",
                **lock_arguments(self.lock),
            )["UploadId"]

        self.upload_id = self.client._retrying(self.what, create)

    def send(self, number: int, offset: int, data: bytes | bytearray) -> CompletedPartTypeDef:
        checksum = sha256_b64(data)
        response = self.client._retrying(
            f"{self.what} part {number}",
            lambda: self.client._client.upload_part(
                Bucket=self.client.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=cast(bytes, self.client.throttle.body(data)),  # see _put_object
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            ),
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def complete(self, parts: list[CompletedPartTypeDef], total: int) -> Stored:
        """Complete the upload; a retry whose first attempt succeeded unseen counts as done."""
        attempts = 0

        def complete() -> str | None:
            nonlocal attempts
            attempts += 1
            try:
                return self.client._client.complete_multipart_upload(
                    Bucket=self.client.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},
                ).get("VersionId")
            except ClientError as exc:
                # Once completed, the upload is gone and the object is there, whole: the
                # newest version, since each backup writes its keys once.
                if attempts == 1 or error_code(exc) != "NoSuchUpload":
                    raise
                there, version = self.client._stored_version(self.key, total)
                if not there:
                    raise
                return version

        version = self.client._retrying(self.what, complete)
        checksum = composite_checksum([p["ChecksumSHA256"] for p in parts])
        return Stored(total, CHECKSUM_PREFIX + checksum, version)

    def abort(self) -> None:
        """Abort the upload, best effort.

        The caller is already reporting the real failure, and ``abort_incomplete_uploads``
        sweeps up whatever an unreachable endpoint left behind.
        """
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client._retrying(
                f"abort of the {self.what}",
                lambda: self.client._client.abort_multipart_upload(
                    Bucket=self.client.bucket, Key=self.key, UploadId=self.upload_id
                ),
                attempts=ABORT_ATTEMPTS,
            )

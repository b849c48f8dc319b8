"""What a bucket with versioning and Object Lock adds: versions to list and delete by id, and
retention to read and extend (``base.Versioned``, ``base.Locking``).

A bucket's settings are asked once per process and kept: they change only by an admin's hand,
and the answers decide how every object of a cycle is deleted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC
from functools import partial
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import StorageError
from btrsendd.log import get_logger
from btrsendd.storage.awserrors import error_code
from btrsendd.storage.base import Lock, Version
from btrsendd.storage.s3.client import BucketClient, version_argument

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import (
        ListObjectVersionsOutputTypeDef,
        ObjectIdentifierTypeDef,
    )

#: DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1000

#: Answers meaning "this bucket has no Object Lock configuration" (AWS; some compatible
#: servers answer a plain 404 instead).
_NO_LOCK_CODES = frozenset(
    {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}
)
#: Answers meaning "no such version" (AWS says NoSuchVersion; some servers, NoSuchKey).
_GONE_CODES = frozenset({"NoSuchVersion", "NoSuchKey"})


class BucketVersions(BucketClient):
    """Versions and retention of one bucket's objects."""

    _keeps_versions: bool | None = None
    _lock_enabled_answer: bool | None = None
    #: The credentials may not ask (a policy written for a btrsendd that never locked).
    _lock_question_denied = False

    def keeps_versions(self) -> bool:
        if self._keeps_versions is None:
            what = f"reading the versioning of {self.description}"
            try:
                answer = self._retrying(
                    what, lambda: self._client.get_bucket_versioning(Bucket=self.bucket)
                )
            except ClientError as exc:
                if error_code(exc) not in ("AccessDenied", "403"):
                    raise self._error(what, exc) from exc
                # A policy written for an older btrsendd: deleting by key, as it did, loses
                # nothing; it only leaves delete markers in a versioned bucket.
                get_logger().warning(
                    "storage.versioning_unknown",
                    detail="access denied to s3:GetBucketVersioning: objects are deleted by "
                    "key, which in a versioned bucket keeps them (billed); allow it",
                )
                self._keeps_versions = False
            except BotoCoreError as exc:
                raise self._error(what, exc) from exc
            else:
                # "Suspended" still keeps the versions written while it was on.
                self._keeps_versions = answer.get("Status") in ("Enabled", "Suspended")
        return self._keeps_versions

    def versions(self, prefix: str) -> Iterator[Version]:
        what = f"listing versions in {self._url(prefix)}"
        markers: tuple[str | None, str | None] = (None, None)
        while True:
            with self._translate(what):
                page = self._retrying(what, partial(self._versions_page, prefix, *markers))
            found = [
                Version(
                    v["Key"],
                    v["VersionId"],
                    v["Size"],
                    v["IsLatest"],
                    storage_class=v.get("StorageClass", "STANDARD"),
                    modified=v.get("LastModified"),
                )
                for v in page.get("Versions", [])
            ] + [
                Version(
                    m["Key"],
                    m["VersionId"],
                    0,
                    m["IsLatest"],
                    delete_marker=True,
                    modified=m.get("LastModified"),
                )
                for m in page.get("DeleteMarkers", [])
            ]
            yield from sorted(found, key=lambda v: v.key)
            if not page.get("IsTruncated"):
                return
            markers = (page.get("NextKeyMarker"), page.get("NextVersionIdMarker"))

    def _versions_page(
        self, prefix: str, key_marker: str | None, version_marker: str | None
    ) -> ListObjectVersionsOutputTypeDef:
        if key_marker is None:
            return self._client.list_object_versions(Bucket=self.bucket, Prefix=prefix)
        return self._client.list_object_versions(
            Bucket=self.bucket,
            Prefix=prefix,
            KeyMarker=key_marker,
            VersionIdMarker=version_marker or "",
        )

    def delete_versions(self, versions: Sequence[Version]) -> None:
        self._delete_objects([{"Key": v.key, "VersionId": v.version} for v in versions])

    def _delete_objects(self, objects: Sequence[ObjectIdentifierTypeDef]) -> None:
        """DeleteObjects in batches: keys (the current version) or versions by id."""
        what = f"deleting from {self.description}"
        for start in range(0, len(objects), DELETE_BATCH):
            batch = list(objects[start : start + DELETE_BATCH])
            with self._translate(what):
                response = self._retrying(
                    what,
                    partial(
                        self._client.delete_objects,
                        Bucket=self.bucket,
                        Delete={"Objects": batch, "Quiet": True},
                    ),
                )
            # DeleteObjects answers 200 even when keys fail; the failures are in the body.  A
            # key or version already gone answers as deleted: what fails is a refusal.
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                version = f" version {first['VersionId']}" if first.get("VersionId") else ""
                raise StorageError(
                    f"{what} failed for {len(errors)} object(s), e.g. {first.get('Key')}"
                    f"{version}: {first.get('Code')}: {first.get('Message')}"
                )

    # -- Object Lock -----------------------------------------------------------------------

    def lock_problem(self) -> str | None:
        if self._lock_enabled() and self.keeps_versions():
            return None
        return (
            f"{self.description} has no Object Lock, which storage.object_lock needs: create "
            f"a bucket with it (`aws s3api create-bucket --bucket NAME "
            f"--object-lock-enabled-for-bucket`, which turns versioning on too), or enable it "
            f"on this one (`aws s3api put-bucket-versioning --bucket {self.bucket} "
            f"--versioning-configuration Status=Enabled`, then `aws s3api "
            f"put-object-lock-configuration --bucket {self.bucket} "
            f"--object-lock-configuration ObjectLockEnabled=Enabled`); or set "
            f'object_lock = "off"'
        )

    def has_object_lock(self) -> bool:
        # Not allowed to ask: a policy written for a btrsendd that never locked anything.
        return self._lock_enabled(denied=False)

    def _lock_enabled(self, denied: bool | None = None) -> bool:
        """Whether the bucket has Object Lock; ``denied`` (if given) is the answer when the
        credentials may not ask."""
        if denied is not None and self._lock_question_denied:
            return denied  # asked once already: every deletion would ask again
        if self._lock_enabled_answer is None:
            what = f"reading the Object Lock configuration of {self.description}"
            try:
                answer = self._retrying(
                    what,
                    lambda: self._client.get_object_lock_configuration(Bucket=self.bucket),
                )
            except ClientError as exc:
                code = error_code(exc)
                if denied is not None and code in ("AccessDenied", "403"):
                    self._lock_question_denied = True
                    return denied
                if code not in _NO_LOCK_CODES | {"404"}:
                    raise self._error(what, exc) from exc
                self._lock_enabled_answer = False
            except BotoCoreError as exc:
                raise self._error(what, exc) from exc
            else:
                config = answer.get("ObjectLockConfiguration", {})
                self._lock_enabled_answer = config.get("ObjectLockEnabled") == "Enabled"
        return self._lock_enabled_answer

    def lock_of(self, key: str, version: str) -> Lock | None:
        what = f"reading the retention of {self._url(key)} version {version}"
        try:
            answer = self._retrying(
                what,
                lambda: self._client.get_object_retention(
                    Bucket=self.bucket, Key=key, VersionId=version
                ),
            )
        except ClientError as exc:
            # A version with no retention answers with an error, not an empty retention; a
            # bucket without Object Lock answers InvalidRequest; a version deleted since
            # (a deletion cut short, an admin's hand) is gone: nothing there is locked.
            if error_code(exc) in _NO_LOCK_CODES | _GONE_CODES | {"404", "InvalidRequest"}:
                return None
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc
        retention = answer.get("Retention", {})
        mode, until = retention.get("Mode"), retention.get("RetainUntilDate")
        if mode is None or until is None:
            return None
        return Lock(mode, until.astimezone(UTC))

    def extend_lock(self, key: str, version: str | None, lock: Lock) -> None:
        what = f"extending the retention of {self._url(key)}"
        with self._translate(what):
            self._retrying(
                what,
                lambda: self._client.put_object_retention(
                    Bucket=self.bucket,
                    Key=key,
                    Retention={"Mode": lock.mode, "RetainUntilDate": lock.until},
                    **version_argument(version),
                ),
            )

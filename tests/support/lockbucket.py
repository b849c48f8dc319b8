"""A versioned bucket seen from behind btrsendd's back: every version, delete marker and lock.

The Object Lock tests look at what S3 keeps, not at what a plain listing shows: a delete
without a version id only hides an object behind a delete marker, and a locked version is
protected whatever the current version of its key is.  So everything here is per version.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from tests.fixtures.s3servers import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: The ``[storage]`` prefix of every lock test's world (``backup_dir`` depends on it).
PREFIX = "host1"


@dataclass(frozen=True)
class Stored:
    """One version of one key, or one delete marker (``size`` 0)."""

    key: str
    version_id: str
    marker: bool
    size: int


@dataclass(frozen=True)
class VersionedBucket:
    """A bucket on an S3 server, with the host's own credentials (as btrsendd has them)."""

    client: S3Client
    name: str

    def everything(self, prefix: str) -> list[Stored]:
        """Every version and delete marker under ``prefix``."""
        found: list[Stored] = []
        pages = self.client.get_paginator("list_object_versions")
        for page in pages.paginate(Bucket=self.name, Prefix=prefix):
            for v in page.get("Versions", []):
                found.append(Stored(v["Key"], v["VersionId"], False, v["Size"]))
            for m in page.get("DeleteMarkers", []):
                found.append(Stored(m["Key"], m["VersionId"], True, 0))
        return found

    def versions(self, prefix: str) -> list[Stored]:
        """The versions (not the delete markers) under ``prefix``."""
        return [v for v in self.everything(prefix) if not v.marker]

    def retention(self, v: Stored) -> tuple[str, datetime]:
        """The lock mode and retain-until date of one version (a version without a lock
        fails the test: every version btrsendd writes must have one)."""
        got = self.client.get_object_retention(Bucket=self.name, Key=v.key, VersionId=v.version_id)
        return got["Retention"]["Mode"], got["Retention"]["RetainUntilDate"]

    def read(self, v: Stored) -> bytes:
        body = self.client.get_object(Bucket=self.name, Key=v.key, VersionId=v.version_id)["Body"]
        data: bytes = body.read()
        return data

    def refuses(self, what: str, **kwargs: Any) -> str:
        """The error code with which the server refused ``client.<what>(Bucket=..., **kwargs)``
        (it must refuse)."""
        try:
            getattr(self.client, what)(Bucket=self.name, **kwargs)
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code"))
        raise AssertionError(f"{what}({kwargs}) was allowed")


def lock_storage(server: S3Server, object_lock: str, *, bucket: str, margin: int | None) -> str:
    """The ``[storage]`` body of a world on ``bucket`` of ``server`` with ``object_lock``."""
    text = (
        f'backend = "s3"\nbucket = "{bucket}"\nprefix = "{PREFIX}"\n'
        f'endpoint_url = "{server.endpoint_url}"\nstorage_class = "STANDARD"\n'
        f'object_lock = "{object_lock}"'
    )
    return text if margin is None else f"{text}\nobject_lock_margin_days = {margin}"


def backup_dir(backup: dict[str, Any]) -> str:
    """The directory of a backup (as ``list --json`` shows it) in the bucket."""
    return f"{PREFIX}/{backup['source']}/{backup['id']}/"


def midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def lock_floor(chain_newest: date, lifetime: int, margin: int) -> datetime:
    """The earliest retain-until a chain whose newest backup is ``chain_newest`` may carry:
    the day it can expire plus the margin, and never before today plus the margin (S3
    refuses a retain-until in the past, and a backup dated in the past is still new)."""
    expiry = chain_newest + timedelta(days=lifetime + margin)
    return midnight_utc(max(expiry, date.today() + timedelta(days=margin)))


def by_chain(backups: list[dict[str, Any]]) -> Iterator[tuple[date, list[dict[str, Any]]]]:
    """Each chain's newest date and its backups (``list --json`` rows)."""
    chains: dict[str, list[dict[str, Any]]] = {}
    for b in backups:
        chains.setdefault(b["chain"], []).append(b)
    for members in chains.values():
        yield max(date.fromisoformat(b["date"]) for b in members), members

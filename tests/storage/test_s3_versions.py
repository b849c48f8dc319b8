"""The S3 backend's versions and Object Lock (``base.Versioned``, ``base.Locking``), on
SeaweedFS, which enforces retention as AWS does: a locked version refuses deletion, a
compliance lock cannot be shortened, and multipart uploads are locked too."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from btrsendd.errors import StorageError
from btrsendd.storage.base import Lock, Version
from btrsendd.storage.s3.bucket import S3Storage
from btrsendd.storage.s3.upload import MiB
from tests.fixtures.s3servers import S3Server


def lock_storage(server: S3Server, **kwargs: object) -> S3Storage:
    bucket = server.new_bucket()
    client = server.client()
    client.delete_bucket(Bucket=bucket)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return S3Storage(
        bucket, endpoint_url=server.endpoint_url, part_size=5 * MiB, object_lock=True, **kwargs
    )


def soon(seconds: int) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def test_versions_are_recorded_read_and_deleted_by_id(seaweedfs_server: S3Server) -> None:
    storage = lock_storage(seaweedfs_server)
    assert storage.lock_problem() is None and storage.keeps_versions()
    first = storage.put_bytes("b/manifest.json", b"genuine")
    big = bytes(range(256)) * (24 * 1024)  # 6 MiB: a multipart upload
    volume = storage.put_stream("b/vol-00000", io.BytesIO(big))
    assert first.version and volume.version
    # Someone writes over both keys: the recorded versions still read back as written.
    storage.put_bytes("b/manifest.json", b"planted")
    storage._client.put_object(Bucket=storage.bucket, Key="b/vol-00000", Body=b"garbage")
    assert storage.get_bytes("b/manifest.json", first.version) == b"genuine"
    assert storage.get_bytes("b/manifest.json") == b"planted"
    with storage.open_read("b/vol-00000", volume.version) as body:
        assert body.read() == big
    assert storage.checksum("b/vol-00000", volume.version) == volume.checksum
    storage._client.delete_object(Bucket=storage.bucket, Key="b/manifest.json")  # a marker
    listed = list(storage.versions("b/"))
    assert len(listed) == 5 and sum(v.delete_marker for v in listed) == 1
    storage.delete_versions(listed)
    assert list(storage.versions("b/")) == []


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_locked_versions_refuse_deletion_until_their_retention_ends(
    seaweedfs_server: S3Server, mode: str
) -> None:
    storage = lock_storage(seaweedfs_server)
    lock = Lock(mode, soon(4))  # type: ignore[arg-type]
    small = storage.put_bytes("b/manifest.json", b"m", lock)
    large = storage.put_stream("b/vol-00000", io.BytesIO(b"v" * (6 * MiB)), lock)
    for key, stored in (("b/manifest.json", small), ("b/vol-00000", large)):
        assert stored.version is not None
        assert storage.lock_of(key, stored.version) == lock
    versions = list(storage.versions("b/"))
    with pytest.raises(StorageError, match="AccessDenied"):
        storage.delete_versions(versions)
    # Extending works in both modes; shortening is refused in compliance mode.
    longer = Lock(lock.mode, soon(6))
    assert large.version is not None
    storage.extend_lock("b/vol-00000", large.version, longer)
    assert storage.lock_of("b/vol-00000", large.version) == longer
    if mode == "COMPLIANCE":
        with pytest.raises(StorageError):
            storage.extend_lock("b/vol-00000", large.version, lock)
    time.sleep(max(0.0, (longer.until - datetime.now(UTC)).total_seconds()) + 1)
    storage.delete_versions(versions)
    assert list(storage.versions("b/")) == []


def test_a_bucket_without_object_lock_is_explained(seaweedfs_server: S3Server) -> None:
    storage = S3Storage(
        seaweedfs_server.new_bucket(), endpoint_url=seaweedfs_server.endpoint_url, object_lock=True
    )
    problem = storage.lock_problem()
    assert problem is not None and "--object-lock-enabled-for-bucket" in problem
    with pytest.raises(StorageError, match="has no Object Lock"):
        storage.check_access()
    assert not storage.keeps_versions()


def test_versioned_bucket_without_lock(seaweedfs_server: S3Server) -> None:
    bucket = seaweedfs_server.new_bucket()
    client = seaweedfs_server.client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    storage = S3Storage(bucket, endpoint_url=seaweedfs_server.endpoint_url)
    assert storage.keeps_versions()
    stored = storage.put_bytes("k", b"x")
    assert stored.version is not None
    storage.delete(["k"])  # by key: only a delete marker
    assert sorted(v.delete_marker for v in storage.versions("k")) == [False, True]
    storage.delete_versions(list(storage.versions("k")))
    assert list(storage.versions("k")) == []
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key="k", VersionId=stored.version)


def test_version_listing_pages(seaweedfs_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = lock_storage(seaweedfs_server)
    for i in range(5):
        storage.put_bytes(f"p/{i}", b"a")
        storage.put_bytes(f"p/{i}", b"b")
    real = storage._client.list_object_versions
    monkeypatch.setattr(
        storage._client,
        "list_object_versions",
        lambda **kw: real(**kw, MaxKeys=3),
    )
    listed = list(storage.versions("p/"))
    assert len({(v.key, v.version) for v in listed}) == 10
    assert all(isinstance(v, Version) for v in listed)

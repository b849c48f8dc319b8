"""The contract every storage backend keeps (``btrsendd/storage/base.py``), on real servers:
the local directory, S3 on moto and on SeaweedFS, and a Glacier vault on the vault test server
(``tests/fixtures/vaultserver.py``).

What a capability promises (``Thawing``, ``IncompleteUploads``) is checked on every backend
that claims it, and a backend that does not claim it is checked not to need it.  What only
one backend does (its part sizes, its error messages, a vault's jobs and inventories) is
tested in that backend's own file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest

from btrsendd.config import PipelineConfig, StorageConfig
from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage import BACKENDS, open_storage
from btrsendd.storage.base import (
    IncompleteUploads,
    Storage,
    Thawing,
    same_checksum,
    thawing,
)
from btrsendd.storage.common import READ_CHUNK, check_key
from btrsendd.storage.local.directory import TEMP_PREFIX
from btrsendd.storage.s3.bucket import S3Storage
from btrsendd.storage.throttle import TOLERANCE, Throttle
from btrsendd.storage.vault.storage import VaultStorage
from tests.fixtures.s3servers import S3Server
from tests.fixtures.vaultserver import VaultServer
from tests.storage.helpers import Dribble

MiB = 1024**2
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Subject:
    """A backend under test, and what the contract needs to know about it."""

    storage: Storage
    #: Streams longer than this are stored in several parts (or, locally, several writes).
    part: int
    #: The class volumes are recorded in.
    storage_class: str
    #: What reading a stored stream says before it is thawed; None if it needs no thawing.
    not_thawed: str | None
    #: What reading a key nothing was stored under says.
    missing: str
    #: How a failed upload of ``h/s/b/vol-00000`` begins its message.
    failed_upload: str
    #: Leaves an unfinished upload under a key, as a crash in the middle of one would;
    #: returns the key the backend reports it under.  None for backends without them.
    leave_unfinished: Callable[[str], str] | None = None


def _local(tmp_path: Path) -> Subject:
    storage = open_storage(StorageConfig(backend="local", path=tmp_path / "archive"), PIPELINE)

    def leave_unfinished(key: str) -> str:
        directory, _, name = key.rpartition("/")
        temp = f"{directory}/{TEMP_PREFIX}{name}-0000abcd"
        (tmp_path / "archive" / directory).mkdir(parents=True, exist_ok=True)
        (tmp_path / "archive" / temp).write_bytes(b"cut short")
        return temp

    return Subject(
        storage,
        READ_CHUNK,
        "local",
        None,
        "no object 'h/nope'",
        f"cannot write {tmp_path}/archive/h/s/b/vol-00000",
        leave_unfinished,
    )


def _s3(server: S3Server, storage_class: str) -> Subject:
    cfg = StorageConfig.model_validate(
        {
            "bucket": server.new_bucket(),
            "endpoint_url": server.endpoint_url,
            "storage_class": storage_class,
        }
    )
    storage = open_storage(cfg, PIPELINE)
    assert isinstance(storage, S3Storage)

    def leave_unfinished(key: str) -> str:
        storage._client.create_multipart_upload(Bucket=storage.bucket, Key=key)
        return key

    not_thawed = "archived in cold storage" if storage_class == "DEEP_ARCHIVE" else None
    return Subject(
        storage,
        PIPELINE.part_size,
        storage_class,
        not_thawed,
        "there is no such object",
        f"upload of s3://{storage.bucket}/h/s/b/vol-00000 failed",
        leave_unfinished,
    )


def _vault(server: VaultServer, tmp_path: Path) -> Subject:
    # Built directly, not from a configuration: [pipeline] allows no part below 5 MiB, and
    # 1 MiB parts keep the vault's multipart streams small.
    name = server.new_vault()
    storage = VaultStorage(
        name,
        index_path=tmp_path / f"vault-{name}.db",
        endpoint_url=server.endpoint_url,
        volume_size=8 * MiB,
        part_size=MiB,
        read_range=MiB,
        retry_delay=0.01,
        retry_budget=0.5,
    )
    return Subject(
        storage,
        MiB,
        "GLACIER_VAULT",
        "needs a retrieval job",
        "catalog rebuild",
        f"upload of h/s/b/vol-00000 in vault {name} failed",
    )


PIPELINE = PipelineConfig(part_size=5 * MiB, concurrency=3)


@pytest.fixture(params=["local", "s3-moto", "s3-seaweedfs", "glacier-vault"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    """Each contract test runs once per backend.  moto stores in DEEP_ARCHIVE, so thawing is
    exercised on S3 too; SeaweedFS keeps every class readable, so it stores in STANDARD, as
    the README advises for S3-compatible servers."""
    if request.param == "local":
        return _local(tmp_path)
    if request.param == "s3-moto":
        return _s3(request.getfixturevalue("moto_server"), "DEEP_ARCHIVE")
    if request.param == "s3-seaweedfs":
        return _s3(request.getfixturevalue("seaweedfs_server"), "STANDARD")
    return _vault(request.getfixturevalue("vault_server"), tmp_path)


def readable(storage: Storage, key: str, timeout: float = 30) -> None:
    """Thaw ``key`` if it needs it, and wait until it can be read."""
    cold = thawing(storage)
    if cold.thaw_state(key) == "archived":
        cold.request_thaw(key, "Expedited", 1)
    deadline = time.monotonic() + timeout
    while cold.thaw_state(key) != "readable":
        assert time.monotonic() < deadline, f"{key} never became readable"
        time.sleep(0.05)


def keys(storage: Storage, prefix: str) -> list[str]:
    return [o.key for o in storage.list(prefix)]


# -- storing and reading -------------------------------------------------------------------


def test_streams_and_small_objects_round_trip(subject: Subject) -> None:
    storage, part = subject.storage, subject.part
    sizes = [0, 1, 1000, part - 1, part, 2 * part + 77]
    blobs = {f"h/s/b/vol-{n:05}": os.urandom(size) for n, size in enumerate(sizes)}
    for key, data in blobs.items():
        assert storage.put_stream(key, Dribble(data, step=64 * 1024)).size == len(data)
    storage.put_bytes("h/s/b/manifest.json", b'{"format": 1}')
    for key, data in blobs.items():
        readable(storage, key)
        with storage.open_read(key) as body:
            assert body.read() == data, key
    readable(storage, "h/s/b/manifest.json")
    assert storage.get_bytes("h/s/b/manifest.json") == b'{"format": 1}'
    listed = {o.key: o.size for o in storage.list("h/s/b/")}
    assert listed == {**{k: len(v) for k, v in blobs.items()}, "h/s/b/manifest.json": 13}


def test_a_rate_limit_paces_every_part_together(subject: Subject) -> None:
    """``pipeline.rate_limit``: a stream of several parts, sent several at once, takes its
    size over the rate, whatever reads its request bodies how often (botocore hashes them
    on plain HTTP), and is stored as it was."""
    storage, part = subject.storage, subject.part
    data = os.urandom(2 * part + 77)
    rate = len(data) // 2
    storage.throttle = Throttle(rate)  # type: ignore[attr-defined]  # as open_storage sets it
    started = time.monotonic()
    assert storage.put_stream("h/s/b/vol-00000", Dribble(data, step=MiB)).size == len(data)
    elapsed = time.monotonic() - started
    assert 2.0 - TOLERANCE <= elapsed < 3.5
    readable(storage, "h/s/b/vol-00000")
    with storage.open_read("h/s/b/vol-00000") as body:
        assert body.read() == data


def test_a_rate_limit_paces_reads_of_every_range_together(subject: Subject) -> None:
    """``restore --rate-limit``: an object of several ranges (read several at once where the
    backend is remote) takes its size over the rate, and reads back as it was stored."""
    storage, part = subject.storage, subject.part
    data = os.urandom(3 * part + 77)
    storage.put_stream("h/s/b/vol-00000", Dribble(data, step=MiB))
    readable(storage, "h/s/b/vol-00000")
    started = time.monotonic()
    with storage.open_read("h/s/b/vol-00000", throttle=Throttle(len(data) // 2)) as body:
        assert body.read() == data
    assert 2.0 - TOLERANCE <= time.monotonic() - started < 3.5


def test_checksums_are_reported_as_stored(subject: Subject) -> None:
    """A backend that records a checksum at upload reports the same one later, for free;
    one that records none reports none, and says it checks otherwise."""
    storage = subject.storage
    for key, size in (("h/one", 1000), ("h/parts", 3 * subject.part + 5)):
        stored = storage.put_stream(key, Dribble(os.urandom(size), step=MiB))
        reported = storage.checksum(key)
        if storage.free_check == "checksum":
            assert stored.checksum is not None and same_checksum(stored.checksum, reported)
        else:
            assert stored.checksum is None and reported is None


def test_what_a_backend_records_and_checks_for_free(subject: Subject) -> None:
    storage = subject.storage
    assert storage.storage_class == subject.storage_class
    # Reading again is free only where nothing needs thawing.
    assert (storage.free_check == "rehash") == (not isinstance(storage, Thawing))
    assert storage.description


def test_a_failing_stream_leaves_nothing(subject: Subject) -> None:
    storage, part = subject.storage, subject.part
    reader = Dribble(os.urandom(4 * part), step=64 * 1024, fail_after=2 * part + part // 2)
    with pytest.raises(StorageError) as failed:
        storage.put_stream("h/s/b/vol-00000", reader)
    assert str(failed.value) == f"{subject.failed_upload}: simulated pipeline failure"
    assert keys(storage, "") == []
    if isinstance(storage, IncompleteUploads):
        assert storage.incomplete_uploads("") == []


class Interrupting(Dribble):
    """A stream whose reader is interrupted (Ctrl-C, SIGTERM) after ``after`` bytes."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data, step=64 * 1024)
        self.after = after

    def read(self, size: int = -1, /) -> bytes:
        if self.data.tell() >= self.after:
            raise KeyboardInterrupt
        return super().read(size)


def test_an_interrupted_stream_leaves_nothing_and_stays_an_interruption(subject: Subject) -> None:
    """Also a BaseException cleans up (an abandoned multipart upload is billed forever), and
    it passes unchanged, so the command stops as the signal asked."""
    storage, part = subject.storage, subject.part
    with pytest.raises(KeyboardInterrupt):
        storage.put_stream("h/s/b/vol-00000", Interrupting(os.urandom(4 * part), 2 * part + 9))
    assert keys(storage, "") == []
    if isinstance(storage, IncompleteUploads):
        assert storage.incomplete_uploads("") == []


def test_a_key_never_stored_is_a_storage_error(subject: Subject) -> None:
    with pytest.raises(StorageError, match=subject.missing):
        subject.storage.get_bytes("h/nope")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a/\0"])
def test_unsafe_keys_are_refused(subject: Subject, key: str) -> None:
    """Keys are the same everywhere, so the strictest backend's rules (a directory's) hold
    for all: a backup written to one backend can be copied to any other."""
    storage = subject.storage
    with pytest.raises(ValueError, match="invalid object key"):
        check_key(key)
    for call in (
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.put_stream(key, Dribble(b"x")),
        lambda: storage.get_bytes(key),
        lambda: storage.delete([key]),
    ):
        with pytest.raises(ValueError, match="invalid object key"):
            call()


# -- listing and deleting ------------------------------------------------------------------


def test_listing_by_prefix_is_in_key_order(subject: Subject) -> None:
    storage = subject.storage
    for key in ["h/s/2024-b/v1", "h/s/2024-a/v2", "h/s/2024-a/v1", "h/s/2025/v1", "h/t/v1"]:
        storage.put_bytes(key, key.encode())
    # A prefix may end in the middle of a name, as S3's do.
    assert keys(storage, "h/s/2024") == ["h/s/2024-a/v1", "h/s/2024-a/v2", "h/s/2024-b/v1"]
    assert keys(storage, "h/s/2024-a/") == ["h/s/2024-a/v1", "h/s/2024-a/v2"]
    assert keys(storage, "h/") == keys(storage, "") == keys(storage, "h")
    assert len(keys(storage, "")) == 5
    assert keys(storage, "nothing/here/") == []
    assert [(o.key, o.size) for o in storage.list("h/t/")] == [("h/t/v1", 6)]


def test_deleting_a_missing_key_is_fine(subject: Subject) -> None:
    """Deletion is retried after interruptions, so keys already gone are no error."""
    storage = subject.storage
    for key in ("a/1", "a/2", "b/1"):
        storage.put_bytes(key, b"x")
    storage.delete(["a/1", "a/2", "a/never-existed", "nowhere/x"])
    assert keys(storage, "") == ["b/1"]
    storage.delete(["a/1"])
    storage.delete([])
    assert keys(storage, "") == ["b/1"]


# -- capabilities --------------------------------------------------------------------------


def test_unfinished_uploads_are_listed_and_aborted(subject: Subject) -> None:
    storage = subject.storage
    if subject.leave_unfinished is None:
        # Nothing an interruption leaves behind is this backend's to clean up.
        assert not isinstance(storage, IncompleteUploads)
        return
    assert isinstance(storage, IncompleteUploads)
    left = [subject.leave_unfinished(key) for key in ("a/x", "a/y", "b/z")]
    assert sorted(storage.incomplete_uploads("a/")) == left[:2]  # in no particular order
    assert keys(storage, "") == []  # an unfinished upload is no object
    assert storage.abort_incomplete_uploads("a/") == 2
    assert storage.incomplete_uploads("") == left[2:]
    assert storage.abort_incomplete_uploads("") == 1
    assert storage.incomplete_uploads("") == []


def test_thaw_states(subject: Subject) -> None:
    """Archived volumes read only once thawed; requests are idempotent (a restarted restore
    pays once); a backend without cold storage has everything readable at once."""
    storage = subject.storage
    data = os.urandom(2 * subject.part + 5)
    storage.put_stream("h/s/b/vol-00000", Dribble(data, step=MiB))
    if not isinstance(storage, Thawing):
        assert subject.not_thawed is None
        assert thawing(storage).thaw_state("h/s/b/vol-00000") == "readable"
        with storage.open_read("h/s/b/vol-00000") as body:
            assert body.read() == data
        return
    assert storage.thaw_lifetime(7).total_seconds() > 0
    state = storage.thaw_state("h/s/b/vol-00000")
    assert state == ("readable" if subject.not_thawed is None else "archived")
    if subject.not_thawed is not None:
        with (
            pytest.raises(NotThawedError, match=subject.not_thawed),
            storage.open_read("h/s/b/vol-00000"),
        ):
            pass
        storage.request_thaw("h/s/b/vol-00000", "Bulk", 1)
        storage.request_thaw("h/s/b/vol-00000", "Bulk", 1)
        readable(storage, "h/s/b/vol-00000")
    with storage.open_read("h/s/b/vol-00000") as body:
        assert body.read() == data


def test_a_readable_stream_reads_back_at_once_whatever_the_class(subject: Subject) -> None:
    """A file index: stored like a volume (in parts), but never archived; a vault, which
    archives everything, refuses rather than store one that cannot be read."""
    storage = subject.storage
    data = os.urandom(2 * subject.part + 5)
    if not storage.has_readable_class:
        with pytest.raises(StorageError, match="no class readable without a retrieval"):
            storage.put_stream("h/s/b/file-index", Dribble(data, step=MiB), readable=True)
        assert keys(storage, "h/") == []
        return
    stored = storage.put_stream("h/s/b/file-index", Dribble(data, step=MiB), readable=True)
    assert stored.size == len(data)
    assert thawing(storage).thaw_state("h/s/b/file-index") == "readable"
    with storage.open_read("h/s/b/file-index") as body:
        assert body.read() == data
    [listed] = storage.list("h/s/b/")
    assert listed.storage_class in ("STANDARD", "local")


# -- the registry --------------------------------------------------------------------------


def test_every_backend_the_configuration_allows_is_registered() -> None:
    allowed = get_args(StorageConfig.model_fields["backend"].annotation)
    assert sorted(BACKENDS) == sorted(allowed)
    assert all(name == backend.name for name, backend in BACKENDS.items())


def test_the_local_backend_never_imports_an_aws_library(tmp_path: Path) -> None:
    """Configurations of every backend load, and the local one is opened and used, without
    boto3: it may not even be installed on a machine backing up to a disk."""
    script = f"""
import sys
from pathlib import Path
from btrsendd.config import PipelineConfig, StorageConfig
from btrsendd.storage import open_storage
StorageConfig(bucket="b")
StorageConfig(backend="glacier-vault", vault="v")
local = StorageConfig(backend="local", path=Path({str(tmp_path)!r}))
storage = open_storage(local, PipelineConfig())
storage.put_bytes("k", b"v")
assert storage.get_bytes("k") == b"v"
print(sorted(m for m in sys.modules if m.startswith(("boto3", "botocore"))))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"

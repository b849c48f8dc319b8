"""A legacy Glacier vault (the 2012 vault API) as object storage.

Vaults know no keys: every upload becomes an archive with an opaque id, and reading one needs
a retrieval job that takes minutes to hours.  This backend keeps the ``Storage`` protocol's
keys anyway, with a small sqlite index in the state directory (``index.py``) mapping each key
to its archive id, size and tree hash, and recording the retrieval jobs already paid for.
Each archive's description names its key (``archives.py``), so the index can be rebuilt from
a vault inventory (``inventory.py``).

Volumes stream in as multipart uploads (``upload.py``), checked by the vault with tree hashes
part by part; downloads fetch the job output in checked ranges, several at once
(``download.py``).  Everything here, manifests included, needs a retrieval job before it can
be read: vaults have no immediately readable class.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from btrsendd.errors import NotThawedError, StorageError
from btrsendd.storage import multipart
from btrsendd.storage.awserrors import RETRY_BUDGET, RETRY_DELAY
from btrsendd.storage.base import (
    FreeCheck,
    Lock,
    ObjectInfo,
    Readable,
    Stored,
    ThawState,
    Tier,
)
from btrsendd.storage.common import check_key, refuse_lock
from btrsendd.storage.ranged import RangeBudget
from btrsendd.storage.throttle import UNLIMITED, Throttle
from btrsendd.storage.vault import inventory
from btrsendd.storage.vault.archives import (
    STORAGE_CLASS,
    Archive,
    GiB,
    archive_description,
    choose_part_size,
    is_part_size,
)
from btrsendd.storage.vault.client import VaultClient
from btrsendd.storage.vault.download import DEFAULT_READ_RANGE, JobOutput
from btrsendd.storage.vault.index import VaultIndex
from btrsendd.storage.vault.upload import VaultUpload

#: Retrieval job output can be downloaded for 24 hours after the job completes.
JOB_OUTPUT_LIFETIME = timedelta(hours=24)


class VaultStorage(VaultClient):
    """The ``Storage`` protocol on one Glacier vault, with its thaw states (retrieval jobs)
    and an index rebuilt from an inventory.

    ``index_path`` is the sqlite index (keep it in the state directory).  ``volume_size`` is
    the largest raw volume the pipeline writes; with ``part_size`` (a wish, rounded up to a
    power of two MiB) it fixes the multipart part size (``choose_part_size``).  Memory is
    about ``concurrency`` parts on upload and ``concurrency`` ranges of ``read_range`` on
    download.
    """

    storage_class = STORAGE_CLASS
    #: Glacier checks the tree hash on upload but reports it only in an inventory (a
    #: retrieval job), so there is nothing to compare later for free but sizes.
    free_check: FreeCheck = "size"
    #: Every archive needs a retrieval job before it can be read, manifests included.
    has_readable_class = False

    def __init__(
        self,
        vault: str,
        *,
        index_path: Path,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        volume_size: int = GiB,
        part_size: int | None = None,
        concurrency: int = 4,
        read_range: int = DEFAULT_READ_RANGE,
        max_attempts: int = 1,
        retry_budget: float = RETRY_BUDGET,
        retry_delay: float = RETRY_DELAY,
        throttle: Throttle = UNLIMITED,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if not is_part_size(read_range):
            raise ValueError(f"read_range must be a power of two MiB, not {read_range}")
        super().__init__(
            vault,
            region=region,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            max_attempts=max_attempts,
            retry_budget=retry_budget,
            retry_delay=retry_delay,
            throttle=throttle,
        )
        self.part_size = choose_part_size(volume_size, part_size)
        self.concurrency = concurrency
        self.read_range = read_range
        #: What every download shares: ``concurrency`` ranges of ``read_range`` in memory.
        self._ranges = RangeBudget(concurrency, read_range)
        self.index = VaultIndex(index_path)

    def _archive(self, key: str) -> Archive:
        archive = self.index.archive(check_key(key))
        if archive is None:
            raise StorageError(
                f"no object {key!r} in the index of {self.description} ({self.index.path}); "
                "if the vault has it, rebuild the index from an inventory "
                "(`btrsendd catalog rebuild`)"
            )
        return archive

    # -- writing ---------------------------------------------------------------------------

    def put_stream(
        self, key: str, stream: Readable, lock: Lock | None = None, *, readable: bool = False
    ) -> Stored:
        refuse_lock(lock, self.description)
        if readable:
            # A last guard, as for locks: an archive is never readable without a retrieval.
            raise StorageError(f"{self.description} has no class readable without a retrieval")
        what = f"upload of {self._name(check_key(key))}"
        try:
            description = archive_description(key)
        except ValueError as exc:
            raise StorageError(f"{what} failed: {exc}") from None
        upload = VaultUpload(
            self, key, description, part_size=self.part_size, concurrency=self.concurrency
        )
        archive = multipart.store(stream, upload)
        self._record(archive)
        return Stored(archive.size)

    def put_bytes(self, key: str, data: bytes, lock: Lock | None = None) -> Stored:
        return self.put_stream(key, io.BytesIO(data), lock)

    def _record(self, archive: Archive) -> None:
        """Point the key at its new archive, then delete the archive it replaces, if any.

        The engine never rewrites a key, but the protocol allows it; an old archive that
        cannot be deleted is reported, since nothing else would ever find it again.
        """
        previous = self.index.record(archive)
        if previous is None or previous.archive_id == archive.archive_id:
            return
        try:
            self._delete_archive(previous.archive_id)
        except StorageError as exc:
            raise StorageError(
                f"{self._name(archive.key)} was replaced, but its previous archive "
                f"{previous.archive_id} could not be deleted ({exc}); delete it with "
                f"`aws glacier delete-archive --account-id - --vault-name {self.vault} "
                f"--archive-id {previous.archive_id}`"
            ) from exc

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        with self.open_read(key) as body:
            return body.read()

    @contextlib.contextmanager
    def open_read(
        self, key: str, version: str | None = None, *, throttle: Throttle = UNLIMITED
    ) -> Iterator[BinaryIO]:
        archive = self._archive(key)
        job_id = self.index.retrieval(archive.archive_id)
        state = "archived" if job_id is None else self._job_state(archive, job_id)
        if job_id is None or state != "readable":
            raise NotThawedError(
                f"{self._name(key)} needs a retrieval job before it can be read"
                + (" (requested, still running)" if state == "pending" else "; request one")
            )
        output = JobOutput(self, job_id, archive).reader(self._ranges, throttle)
        with io.BufferedReader(output) as reader:
            yield reader

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for archive in self.index.archives(prefix):
            yield ObjectInfo(archive.key, archive.size, STORAGE_CLASS)

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            archive = self.index.archive(check_key(key))
            if archive is None:
                continue
            self._delete_archive(archive.archive_id)
            self.index.forget(archive)

    def checksum(self, key: str, version: str | None = None) -> str | None:
        """None: Glacier reports an archive's tree hash only in an inventory, a paid job."""
        return None

    # -- retrieval jobs --------------------------------------------------------------------

    def _job_state(self, archive: Archive, job_id: str) -> ThawState:
        """What a recorded retrieval job means for reading; forgets jobs that are over."""
        status, message = self._job_status(job_id, f"checking the retrieval of {archive.key}")
        if status == "Succeeded":
            return "readable"
        if status == "InProgress":
            return "pending"
        self.index.drop_retrieval(archive.archive_id)
        if status == "Failed":
            raise StorageError(
                f"the retrieval job for {self._name(archive.key)} failed ({message}); run the "
                "same command again to request a new one"
            )
        return "archived"  # the job's output expired: a new request is needed

    def thaw_state(self, key: str, version: str | None = None) -> ThawState:
        archive = self._archive(key)
        job_id = self.index.retrieval(archive.archive_id)
        return "archived" if job_id is None else self._job_state(archive, job_id)

    def request_thaw(self, key: str, tier: Tier, days: int, version: str | None = None) -> None:
        """Start an archive-retrieval job unless one is running or done; ``days`` has no
        meaning for vaults, whose job output stays downloadable for 24 hours."""
        if self.thaw_state(key) != "archived":
            return
        archive = self._archive(key)
        job_id = self._initiate_job(
            f"retrieval request for {self._name(key)}",
            {
                "Type": "archive-retrieval",
                "ArchiveId": archive.archive_id,
                "Tier": tier,
                "Description": "btrsendd restore",
            },
        )
        self.index.record_retrieval(archive.archive_id, job_id, tier)

    def thaw_lifetime(self, days: int) -> timedelta:
        """A job's output, whatever ``days`` says: a recorded job older than this has no
        output left to wait for."""
        return JOB_OUTPUT_LIFETIME

    # -- the index from an inventory -------------------------------------------------------

    def rebuild_index(
        self,
        wait: bool,
        *,
        poll_seconds: float = inventory.INVENTORY_POLL_SECONDS,
        timeout: float | None = None,
    ) -> bool:
        """Rebuild the key -> archive map from a vault inventory; True once done (see
        ``inventory.rebuild_index``)."""
        return inventory.rebuild_index(
            self, self.index, wait, poll_seconds=poll_seconds, timeout=timeout
        )

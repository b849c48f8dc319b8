"""A legacy Glacier vault (the 2012 vault API) as object storage.

Vaults know no keys: every upload becomes an archive with an opaque id, and reading one needs
a retrieval job that takes minutes to hours.  This backend keeps the ``Storage`` protocol's
keys anyway, with a small sqlite index in the state directory mapping each key to its archive
id, size and tree hash, and recording the retrieval jobs already paid for.  Each archive's
description names its key, so the index can be rebuilt from a vault inventory on a machine
that has nothing but the vault and the credentials (``rebuild_index``).

Volumes stream in with multipart uploads: parts of one power-of-two size (the vault's rule),
read one at a time, uploaded concurrently, each with its SHA-256 tree hash, which the vault
checks before accepting the bytes; the whole archive's tree hash is assembled from the parts'
and checked again at completion.  Downloads fetch the job output in tree-hash-aligned ranges
and check each range, then the whole archive, before the bytes count as read.

Everything here, manifests included, needs a retrieval job before it can be read: vaults have
no immediately readable class.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.errors import NotThawedError, OperationalError, StorageError
from btrsendd.log import get_logger
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
from btrsendd.storage.common import check_key, read_block
from btrsendd.storage.treehash import combine, tree_hash
from btrsendd.strictjson import (
    Invalid,
    Object,
    a_list,
    a_string,
    integer,
    loads,
    printable,
    show,
    text,
    timestamp,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mypy_boto3_glacier import GlacierClient
    from mypy_boto3_glacier.type_defs import JobParametersTypeDef

MiB = 1024**2
GiB = 1024**3

#: The vault's multipart rules: one part size for the whole upload, a power of two MiB from
#: 1 MiB to 4 GiB, every part but the last exactly that size, 10,000 parts at most.
MIN_PART_SIZE = MiB
MAX_PART_SIZE = 4 * GiB
MAX_PARTS = 10_000

#: Archive descriptions: at most 1,024 characters, printable ASCII only.
MAX_DESCRIPTION = 1024
DESCRIPTION_FORMAT = 1
#: SHA-256 tree hashes, as the vault reports them in inventories.
_TREE_HASH_RE = re.compile(r"[0-9a-f]{64}")

#: What ``list`` reports as the class of every archive, so catalogs and price estimates can
#: tell vault archives from S3's GLACIER class (whose Bulk retrievals are free; a vault's
#: are not).
STORAGE_CLASS = "GLACIER_VAULT"
#: Retrieval job output can be downloaded for 24 hours after the job completes.
JOB_OUTPUT_LIFETIME = timedelta(hours=24)

#: Job output is fetched (and held in memory, to be checked before use) this much at a time.
#: A power of two MiB, so every range is tree-hash aligned and the ranges' tree hashes combine
#: into the archive's.
DEFAULT_READ_RANGE = 16 * MiB

#: The retry policy is the S3 backend's (``awserrors``): a failing request is retried for
#: ``RETRY_BUDGET`` seconds from its first failure, waiting from ``RETRY_DELAY`` doubling up
#: to ``RETRY_MAX_DELAY`` with jitter, and every retry is logged (``storage.retrying``).
#: Aborting tries ``ABORT_ATTEMPTS`` times only: the vault may drop an upload after 24 hours
#: without activity anyway.

#: An inventory job takes hours on AWS; asking every few minutes is plenty.
INVENTORY_POLL_SECONDS = 600.0

_INDEX_SCHEMA_VERSION = 1
_INDEX_SCHEMA = """
CREATE TABLE archives (
    key        TEXT PRIMARY KEY,
    archive_id TEXT NOT NULL,
    size       INTEGER NOT NULL,
    tree_hash  TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- One retrieval job per archive: the job is what was paid for, so a restarted restore finds
-- it here instead of paying again.
CREATE TABLE retrievals (
    archive_id   TEXT PRIMARY KEY,
    job_id       TEXT NOT NULL,
    tier         TEXT NOT NULL,
    requested_at TEXT NOT NULL
);
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_INVENTORY_JOB = "inventory_job"

#: Error codes that mean "the credentials are wrong or may not do this".
_ACCESS_CODES = frozenset(
    {
        "403",
        "AccessDeniedException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
    }
)
_TRANSIENT_CODES = frozenset({"RequestTimeoutException", "ThrottlingException"})
_NOT_FOUND = "ResourceNotFoundException"


def is_part_size(size: int) -> bool:
    """Whether the vault accepts ``size`` as a multipart part size."""
    return MIN_PART_SIZE <= size <= MAX_PART_SIZE and size % MiB == 0 and _power_of_two(size)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def choose_part_size(volume_size: int, preferred: int | None = None) -> int:
    """The part size for archives of up to about ``volume_size`` bytes.

    The smallest power of two MiB that is at least ``preferred`` (rounded up) and fits a
    volume into 10,000 parts.  The part size is fixed when an upload starts, before the
    stream's length is known, so it is chosen from the largest volume the pipeline makes;
    compressed and encrypted bytes of incompressible data slightly outgrow the raw volume,
    hence the headroom of 1/64 and 1 MiB.
    """
    largest = volume_size + volume_size // 64 + MiB
    wanted = min(preferred or 0, MAX_PART_SIZE)
    size = MIN_PART_SIZE
    while size < wanted or size * MAX_PARTS < largest:
        size *= 2
    if size > MAX_PART_SIZE:
        raise ValueError(
            f"volumes of {volume_size} bytes do not fit into {MAX_PARTS} parts of at most "
            f"{MAX_PART_SIZE} bytes; lower pipeline.volume_size"
        )
    return size


def archive_description(key: str) -> str:
    """The description that names ``key``'s archive, for rebuilding the index from an inventory.

    Only the key is in it: the description is fixed when an upload starts, before the size
    or any digest is known, and the inventory reports size and tree hash anyway.
    """
    text = json.dumps({"btrsendd": DESCRIPTION_FORMAT, "key": key}, separators=(",", ":"))
    if len(text) > MAX_DESCRIPTION or not all(" " <= c <= "~" for c in text):
        raise ValueError(
            f"object key {key!r} is too long for a Glacier archive description "
            f"({len(text)} of at most {MAX_DESCRIPTION} characters); shorten storage.prefix"
        )
    return text


def key_from_description(description: str) -> str | None:
    """The key a btrsendd archive description names; None for anyone else's archive, and
    for one that names no safe, printable key (the key becomes a path on restore)."""
    try:
        # surrogatepass: a string from JSON can hold lone surrogates, which are not UTF-8.
        doc = loads(description.encode("utf-8", "surrogatepass"))
    except Invalid:
        return None
    if not isinstance(doc, dict) or doc.get("btrsendd") != DESCRIPTION_FORMAT:
        return None
    key = doc.get("key")
    if not isinstance(key, str) or not key.isprintable():
        return None
    try:
        return check_key(key)
    except ValueError:
        return None


def _inventory_archive(entry: Object) -> Archive | None:
    """The archive an inventory entry describes; None if it is not btrsendd's.

    Raises ``Invalid`` for an entry that claims to be btrsendd's (its description holds the
    ``"btrsendd"`` marker) but names no safe key, or whose fields have the wrong types:
    skipped with a warning, since its key cannot be trusted with a path.
    """
    description = entry.opt("ArchiveDescription", a_string, may_be_absent=True)
    key = None if description is None else key_from_description(description)
    if key is None:
        if description is not None and '"btrsendd"' in description:
            raise Invalid(
                entry.field("ArchiveDescription"),
                f"{show(description)} names no object key this btrsendd can use",
            )
        return None
    return Archive(
        key,
        entry.req("ArchiveId", printable),
        entry.req("Size", integer(0, MAX_PARTS * MAX_PART_SIZE)),
        entry.req("SHA256TreeHash", text(_TREE_HASH_RE, "a tree hash (64 lowercase hex digits)")),
        entry.req("CreationDate", timestamp),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _DamagedRange(StorageError):
    """A downloaded range that is short or fails its tree hash: fetched again, then reported."""


@dataclass(frozen=True)
class Archive:
    """One key's archive as the index knows it."""

    key: str
    archive_id: str
    size: int
    tree_hash: str
    created_at: str


class VaultIndex:
    """The sqlite file mapping keys to archives and archives to retrieval jobs.

    Opened on first use, so building a ``VaultStorage`` (``check-config`` does) touches no
    file.  One connection guarded by a lock: the engine may call from more than one thread
    over a daemon's life, and sqlite's own locking covers other processes (a restore running
    beside the daemon).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db or self._open()
            try:
                with db:
                    yield db
            except sqlite3.Error as exc:
                raise OperationalError(f"vault index {self.path}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            new = not self.path.exists()
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            if new:
                self.path.chmod(0o600)  # it lists every backup: root-only like the catalog
            db.execute("PRAGMA journal_mode=WAL")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > _INDEX_SCHEMA_VERSION:
                raise OperationalError(
                    f"vault index {self.path} was written by a newer btrsendd; upgrade btrsendd"
                )
            if version == 0:
                with db:
                    for statement in _INDEX_SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {_INDEX_SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise OperationalError(f"cannot open vault index {self.path}: {exc}") from None
        self._db = db
        return db

    def archive(self, key: str) -> Archive | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT key, archive_id, size, tree_hash, created_at FROM archives WHERE key = ?",
                (key,),
            ).fetchone()
        return None if row is None else Archive(*row)

    def archives(self, prefix: str) -> list[Archive]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, archive_id, size, tree_hash, created_at FROM archives"
                " WHERE substr(key, 1, length(?)) = ? ORDER BY key",
                (prefix, prefix),
            ).fetchall()
        return [Archive(*row) for row in rows]

    def record(self, archive: Archive) -> Archive | None:
        """Point ``archive.key`` at ``archive``; returns the archive it pointed at before."""
        previous = self.archive(archive.key)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO archives VALUES (?, ?, ?, ?, ?)",
                (
                    archive.key,
                    archive.archive_id,
                    archive.size,
                    archive.tree_hash,
                    archive.created_at,
                ),
            )
        return previous

    def forget(self, archive: Archive) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM archives WHERE key = ? AND archive_id = ?",
                (archive.key, archive.archive_id),
            )
            db.execute("DELETE FROM retrievals WHERE archive_id = ?", (archive.archive_id,))

    def retrieval(self, archive_id: str) -> str | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id FROM retrievals WHERE archive_id = ?", (archive_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def record_retrieval(self, archive_id: str, job_id: str, tier: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO retrievals VALUES (?, ?, ?, ?)",
                (archive_id, job_id, tier, _now()),
            )

    def drop_retrieval(self, archive_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM retrievals WHERE archive_id = ?", (archive_id,))

    def inventory_job(self) -> str | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT value FROM settings WHERE name = ?", (_INVENTORY_JOB,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_inventory_job(self, job_id: str | None) -> None:
        with self._transaction() as db:
            if job_id is None:
                db.execute("DELETE FROM settings WHERE name = ?", (_INVENTORY_JOB,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO settings VALUES (?, ?)", (_INVENTORY_JOB, job_id)
                )

    def replace_from_inventory(self, found: Sequence[Archive], inventory_date: str) -> int:
        """Make the inventory's archives the map, keeping what was uploaded after it was taken.

        AWS takes a vault's inventory about once a day, so archives recorded here after
        ``inventory_date`` are missing from it without being gone.  Returns how many such
        newer entries were kept.
        """
        taken = datetime.fromisoformat(inventory_date)
        listed = {a.archive_id for a in found}
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, archive_id, size, tree_hash, created_at FROM archives"
            ).fetchall()
            newer = [
                a
                for a in (Archive(*row) for row in rows)
                if a.archive_id not in listed and datetime.fromisoformat(a.created_at) > taken
            ]
            db.execute("DELETE FROM archives")
            for a in [*found, *newer]:
                db.execute(
                    "INSERT OR REPLACE INTO archives VALUES (?, ?, ?, ?, ?)",
                    (a.key, a.archive_id, a.size, a.tree_hash, a.created_at),
                )
            db.execute(
                "DELETE FROM retrievals WHERE archive_id NOT IN (SELECT archive_id FROM archives)"
            )
        return len(newer)


class _JobOutput(io.RawIOBase):
    """A retrieval job's output as a file: fetched range by range, each checked before use.

    The ranges' tree hashes combine into the archive's, checked against the index when the
    last range arrives, so a reader that reaches the end has read exactly what was uploaded.
    """

    def __init__(
        self, fetch: Callable[[int, int], tuple[bytes, bytes]], archive: Archive, range_size: int
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._archive = archive
        self._range_size = range_size
        self._offset = 0
        self._buffer = memoryview(b"")
        self._digests: list[bytes] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if not self._buffer:
            if self._offset >= self._archive.size:
                return 0
            end = min(self._offset + self._range_size, self._archive.size) - 1
            data, digest = self._fetch(self._offset, end)
            self._digests.append(digest)
            self._offset = end + 1
            if self._offset >= self._archive.size:
                whole = combine(self._digests).hex()
                if whole != self._archive.tree_hash:
                    raise StorageError(
                        f"archive of {self._archive.key} has tree hash {whole}, not the "
                        f"{self._archive.tree_hash} recorded at upload; it is damaged or the "
                        "vault index is wrong (rebuild it from an inventory)"
                    )
            self._buffer = memoryview(data)
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


class VaultStorage(AwsRequests):
    """The ``Storage`` protocol on one Glacier vault.

    ``index_path`` is the sqlite index (keep it in the state directory).  ``volume_size`` is
    the largest raw volume the pipeline writes; with ``part_size`` (a wish, rounded up to a
    power of two MiB) it fixes the multipart part size (``choose_part_size``).  Memory is
    about ``concurrency`` parts on upload and one ``read_range`` on download.  Credentials
    come from boto3's standard chain, never from arguments.

    Retrying is done here, as in the S3 backend: every request under ``retry_budget`` seconds
    from its first failure, waits starting at ``retry_delay``; ``max_attempts`` is botocore's
    own total per request, 1 so that the layers do not multiply.
    """

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
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if not is_part_size(read_range):
            raise ValueError(f"read_range must be a power of two MiB, not {read_range}")
        self.vault = vault
        self.region = region
        self.endpoint_url = endpoint_url
        self.part_size = choose_part_size(volume_size, part_size)
        self.concurrency = concurrency
        self.read_range = read_range
        self.retry_budget = retry_budget
        self.retry_delay = retry_delay
        self.retry_max_delay = RETRY_MAX_DELAY
        self.index = VaultIndex(index_path)
        # Read by restore: a recorded job older than this has no output left to wait for.
        self.thaw_lifetime = JOB_OUTPUT_LIFETIME
        self.description = f"Glacier vault {vault} in {region}" + (
            f" at {endpoint_url}" if endpoint_url else ""
        )
        config = Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=max(10, concurrency + 1),
        )
        # One client for all threads: boto3 clients are thread-safe (sessions are not).
        self._client: GlacierClient = boto3.session.Session().client(
            "glacier", region_name=region, endpoint_url=endpoint_url, config=config
        )

    # -- errors ----------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return f"{key} in vault {self.vault}"

    def _error(self, what: str, exc: Exception) -> StorageError:
        """One line for the user; only the service's code and message, never request details."""
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, ClientError):
            code = error_code(exc)
            message = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
            if code == "VaultNotFound" or (code == _NOT_FOUND and "vault" in message.lower()):
                return StorageError(
                    f"{what} failed: vault {self.vault!r} does not exist in {self.region}"
                    + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                    + ": fix storage.vault or storage.region (btrsendd uses existing vaults "
                    "and never creates one)"
                )
            if code in _ACCESS_CODES:
                return StorageError(
                    f"{what} failed: access denied ({cause(exc)}); {CHECK_CREDENTIALS} and "
                    "that their policy allows glacier:* on the vault"
                )
            if code == "InsufficientCapacityException":
                return StorageError(
                    f"{what} failed: no Expedited retrieval capacity right now; use --tier "
                    "Standard or Bulk, or buy provisioned capacity"
                )
            return StorageError(f"{what} failed: {cause(exc)}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{what} failed: {NO_CREDENTIALS}")
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            endpoint = self.endpoint_url or f"Glacier in {self.region}"
            return StorageError(f"{what} failed: cannot reach {endpoint}: {exc}")
        return StorageError(f"{what} failed: {exc}")

    def _retryable(self, exc: Exception) -> bool:
        """Retryable AWS failures, and a damaged download range (fetched again)."""
        return isinstance(exc, _DamagedRange) or is_transient(exc, _TRANSIENT_CODES)

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

    def put_stream(self, key: str, stream: Readable) -> Stored:
        what = f"upload of {self._name(check_key(key))}"
        try:
            description = archive_description(key)
        except ValueError as exc:
            raise StorageError(f"{what} failed: {exc}") from None
        try:
            block = read_block(stream, self.part_size)
            if len(block) < self.part_size:
                # Shorter than one part: one request instead of three.
                data = bytes(block)
                del block
                archive = self._upload_single(what, key, description, data)
            else:
                archive = self._upload_multipart(what, key, description, stream, [block])
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise self._error(what, exc) from exc
            raise
        self._record(archive)
        # Glacier checks the tree hash on upload but reports it only in an inventory (a
        # retrieval job), so there is nothing to compare later for free.
        return Stored(archive.size)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data))

    def _upload_single(self, what: str, key: str, description: str, data: bytes) -> Archive:
        """One request.  A retry after a first attempt that succeeded unseen leaves a second
        archive for the key; the index holds the later one, and an inventory (whose newest
        archive per key wins) agrees."""
        checksum = tree_hash(data).hex()
        response = self._retrying(
            what,
            lambda: self._client.upload_archive(
                vaultName=self.vault, archiveDescription=description, checksum=checksum, body=data
            ),
        )
        return Archive(key, response["archiveId"], len(data), checksum, _now())

    def _upload_multipart(
        self, what: str, key: str, description: str, stream: Readable, handoff: list[bytearray]
    ) -> Archive:
        """Upload in parts (the first already read, handed over in ``handoff``); abort on any
        failure, also on KeyboardInterrupt: an upload left open keeps its parts until the vault
        drops it (it may after 24 hours without activity)."""
        upload_id = self._retrying(
            what,
            lambda: self._client.initiate_multipart_upload(
                vaultName=self.vault, archiveDescription=description, partSize=str(self.part_size)
            )["uploadId"],
        )
        try:
            digests, total = self._upload_parts(what, upload_id, stream, handoff)
            checksum = combine(digests).hex()
            archive_id = self._complete(what, key, upload_id, total, checksum)
        except BaseException:
            self._abort(what, upload_id)
            raise
        return Archive(key, archive_id, total, checksum, _now())

    def _complete(self, what: str, key: str, upload_id: str, total: int, checksum: str) -> str:
        """Complete the upload and return the archive id.

        Unlike S3, a vault cannot be asked afterwards what a completion that succeeded unseen
        produced; if a retry finds the upload gone, that is said, since the archive may exist
        (and be billed) until a rebuilt index lets ``verify --clean`` find it.
        """
        attempts = 0

        def complete() -> str:
            nonlocal attempts
            attempts += 1
            try:
                return self._client.complete_multipart_upload(
                    vaultName=self.vault,
                    uploadId=upload_id,
                    archiveSize=str(total),
                    checksum=checksum,
                )["archiveId"]
            except ClientError as exc:
                if attempts == 1 or error_code(exc) != _NOT_FOUND:
                    raise
                raise StorageError(
                    f"{what} failed: the vault completed it while the answer was lost, so its "
                    f"archive id is unknown; the archive (description naming {key}) shows in "
                    "the vault's next inventory"
                ) from exc

        return self._retrying(what, complete)

    def _upload_parts(
        self, what: str, upload_id: str, stream: Readable, handoff: list[bytearray]
    ) -> tuple[list[bytes], int]:
        """Read parts one by one and upload them concurrently; returns (tree hashes, bytes).

        A semaphore counts part buffers, the one being read included, so at most
        ``concurrency`` exist at once; after a failure no new part is read, and parts already
        running finish before this returns, so the caller's abort is last.
        """
        slots = threading.Semaphore(self.concurrency)
        failed = threading.Event()
        futures: list[Future[bytes]] = []

        def release(future: Future[bytes]) -> None:
            slots.release()
            if future.cancelled() or future.exception() is not None:
                failed.set()

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vault-part")
        try:
            slots.acquire()
            block = handoff.pop()
            total = 0
            while True:
                at_end = len(block) < self.part_size
                # botocore's Glacier checksum hook takes bytes or files, not bytearrays.
                data = bytes(block)
                del block
                future = pool.submit(self._upload_part, what, upload_id, total, data)
                future.add_done_callback(release)
                futures.append(future)
                total += len(data)
                del data  # the worker owns it now
                if at_end:
                    break
                slots.acquire()
                if failed.is_set():
                    break
                block = read_block(stream, self.part_size)
                if not block:
                    slots.release()
                    break
                if len(futures) == MAX_PARTS:
                    raise StorageError(
                        f"upload to {self.description} failed: the stream exceeds {MAX_PARTS} "
                        f"parts of {self.part_size // MiB} MiB, a vault's limit for one "
                        "archive; lower pipeline.volume_size"
                    )
            return [f.result() for f in futures], total
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _upload_part(self, what: str, upload_id: str, start: int, data: bytes) -> bytes:
        digest = tree_hash(data)
        self._retrying(
            f"{what} (bytes {start}-{start + len(data) - 1})",
            lambda: self._client.upload_multipart_part(
                vaultName=self.vault,
                uploadId=upload_id,
                checksum=digest.hex(),
                range=f"bytes {start}-{start + len(data) - 1}/*",
                body=data,
            ),
        )
        return digest

    def _abort(self, what: str, upload_id: str) -> None:
        """Abort an upload, best effort: the caller is already reporting the real failure."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._retrying(
                f"abort of the {what}",
                lambda: self._client.abort_multipart_upload(
                    vaultName=self.vault, uploadId=upload_id
                ),
                attempts=ABORT_ATTEMPTS,
            )

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

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as body:
            return body.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        archive = self._archive(key)
        job_id = self.index.retrieval(archive.archive_id)
        state = "archived" if job_id is None else self._job_state(archive, job_id)
        if job_id is None or state != "readable":
            raise NotThawedError(
                f"{self._name(key)} needs a retrieval job before it can be read"
                + (" (requested, still running)" if state == "pending" else "; request one")
            )
        what = f"download of {self._name(key)}"

        def fetch(start: int, end: int) -> tuple[bytes, bytes]:
            try:
                return self._retrying(
                    f"{what} (bytes {start}-{end})",
                    lambda: self._fetch_range(job_id, archive, start, end),
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._error(what, exc) from exc

        with io.BufferedReader(_JobOutput(fetch, archive, self.read_range)) as reader:
            yield reader

    def _fetch_range(
        self, job_id: str, archive: Archive, start: int, end: int
    ) -> tuple[bytes, bytes]:
        """One range of a job's output and its tree hash, checked against the vault's.

        The vault sends the range's tree hash when the range is tree-hash aligned, which ours
        always are; a server that leaves it out (moto) is still checked as a whole at the end.
        """
        response = self._client.get_job_output(
            vaultName=self.vault, jobId=job_id, range=f"bytes={start}-{end}"
        )
        with contextlib.closing(response["body"]) as body:
            data = body.read()
        if len(data) != end - start + 1:
            raise _DamagedRange(
                f"download of {self._name(archive.key)} failed: bytes {start}-{end} came back "
                f"as {len(data)} bytes"
            )
        digest = tree_hash(data)
        sent = response.get("checksum")
        if sent and sent != digest.hex():
            raise _DamagedRange(
                f"download of {self._name(archive.key)} failed: bytes {start}-{end} do not "
                f"match the tree hash the vault sent with them"
            )
        return data, digest

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

    def _delete_archive(self, archive_id: str) -> None:
        """Delete one archive; one already gone is not an error (deletion is retried)."""
        what = f"deleting archive {archive_id} from {self.description}"
        try:
            self._retrying(
                what,
                lambda: self._client.delete_archive(vaultName=self.vault, archiveId=archive_id),
            )
        except ClientError as exc:
            if error_code(exc) != _NOT_FOUND:
                raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc

    # -- retrieval jobs --------------------------------------------------------------------

    def _job_status(self, job_id: str, what: str) -> tuple[str, str]:
        """(status, message) of a job; status ``gone`` once the vault has forgotten it (job
        output is kept for at least 24 hours after the job completes)."""
        try:
            job = self._retrying(
                what, lambda: self._client.describe_job(vaultName=self.vault, jobId=job_id)
            )
        except ClientError as exc:
            if error_code(exc) == _NOT_FOUND:
                return "gone", ""
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc
        return str(job.get("StatusCode", "InProgress")), str(job.get("StatusMessage") or "")

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

    def checksum(self, key: str) -> str | None:
        """None: Glacier reports an archive's tree hash only in an inventory, a paid job."""
        return None

    def thaw_state(self, key: str) -> ThawState:
        archive = self._archive(key)
        job_id = self.index.retrieval(archive.archive_id)
        return "archived" if job_id is None else self._job_state(archive, job_id)

    def request_thaw(self, key: str, tier: Tier, days: int) -> None:
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

    def _initiate_job(self, what: str, parameters: JobParametersTypeDef) -> str:
        """Start a job (an archive's or the inventory's retrieval); returns its id."""
        start = partial(self._client.initiate_job, vaultName=self.vault, jobParameters=parameters)
        with self._translate(what):
            return self._retrying(what, start)["jobId"]

    # -- the index from an inventory -------------------------------------------------------

    def rebuild_index(
        self,
        wait: bool,
        *,
        poll_seconds: float = INVENTORY_POLL_SECONDS,
        timeout: float | None = None,
    ) -> bool:
        """Rebuild the key -> archive map from a vault inventory; True once done.

        Starts an inventory-retrieval job, or resumes the one recorded by an earlier call (a
        job takes hours on AWS, and its id survives in the index so no second one is paid
        for).  Without ``wait`` it returns False while the job runs; run it again later.
        Archives whose descriptions are not btrsendd's are left alone and out of the map.
        """
        what = f"inventory of {self.description}"
        deadline = None if timeout is None else time.monotonic() + timeout
        restarted = False
        while True:
            job_id = self.index.inventory_job()
            if job_id is None:
                job_id = self._initiate_job(
                    what,
                    {
                        "Type": "inventory-retrieval",
                        "Format": "JSON",
                        "Description": "btrsendd catalog rebuild",
                    },
                )
                self.index.set_inventory_job(job_id)
            status, message = self._job_status(job_id, what)
            if status == "gone" and not restarted:
                # Output of a job from more than a day ago: ask for a fresh inventory.
                self.index.set_inventory_job(None)
                restarted = True
                continue
            if status in ("Failed", "gone"):
                self.index.set_inventory_job(None)
                why = f"failed ({message})" if status == "Failed" else "was lost by the vault"
                raise StorageError(f"{what} failed: the inventory job {why}; run it again")
            if status == "Succeeded":
                self._apply_inventory(job_id, what)
                self.index.set_inventory_job(None)
                return True
            if not wait:
                return False
            if deadline is not None and time.monotonic() > deadline:
                raise OperationalError(
                    f"{what}: the inventory job is still running after {timeout:.0f} s; run "
                    "the same command again later (it resumes the same job)"
                )
            time.sleep(poll_seconds)

    def _apply_inventory(self, job_id: str, what: str) -> None:
        with self._translate(what):
            raw = self._retrying(what, partial(self._job_output, job_id))
        try:
            doc = Object(loads(raw), "", "an inventory")
            date = doc.req("InventoryDate", timestamp)
            entries = doc.req("ArchiveList", a_list)
        except Invalid as exc:
            raise StorageError(f"{what} failed: unreadable inventory ({exc})") from None
        found: list[Archive] = []
        skipped = 0
        for n, entry in enumerate(entries):
            try:
                archive = _inventory_archive(Object(entry, f"ArchiveList[{n}]"))
            except Invalid as exc:
                get_logger().warning("vault.archive_skipped", vault=self.vault, reason=str(exc))
                skipped += 1
                continue
            if archive is not None:
                found.append(archive)
        # Two archives for one key: the newer one is the key's current content.
        newest: dict[str, Archive] = {}
        for archive in sorted(found, key=lambda a: datetime.fromisoformat(a.created_at)):
            newest[archive.key] = archive
        kept = self.index.replace_from_inventory(list(newest.values()), date)
        get_logger().info(
            "vault.inventory",
            vault=self.vault,
            inventory_date=date,
            archives=len(newest),
            superseded=len(found) - len(newest),
            skipped=skipped,
            foreign=len(entries) - len(found) - skipped,
            newer_kept=kept,
        )

    def _job_output(self, job_id: str) -> bytes:
        response = self._client.get_job_output(vaultName=self.vault, jobId=job_id)
        with contextlib.closing(response["body"]) as body:
            return body.read()

    # -- maintenance -----------------------------------------------------------------------

    def check_access(self) -> None:
        """Fail early, with advice, when the vault is missing or the credentials are wrong."""
        with self._translate(f"access check on {self.description}"):
            self._client.describe_vault(vaultName=self.vault)

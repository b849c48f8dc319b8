"""Reading an archive from its retrieval job's output, as concurrent ranges, each checked.

Job output is fetched in tree-hash-aligned ranges, several at once (``ranged.py``: at most
``concurrency`` ranges of ``read_range`` bytes in memory); each range is checked against the
tree hash the vault sends with it, and fetched again while it does not match.  The ranges'
tree hashes combine into the archive's, checked against the index when the reader reaches
the end, so a reader that reaches the end has read exactly what was uploaded.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import StorageError
from btrsendd.storage.ranged import Part, RangeBudget, RangedReader
from btrsendd.storage.throttle import Throttle
from btrsendd.storage.vault.archives import Archive, MiB
from btrsendd.storage.vault.client import DamagedRange, VaultClient
from btrsendd.storage.vault.treehash import combine, tree_hash

if TYPE_CHECKING:
    from collections.abc import Callable

#: Job output is fetched this much at a time by default.  A power of two MiB, so every range
#: is tree-hash aligned and the ranges' tree hashes combine into the archive's.
DEFAULT_READ_RANGE = 16 * MiB


class JobOutput:
    """The ranges of one retrieval job's output, fetched and checked for a ``RangedReader``."""

    def __init__(self, client: VaultClient, job_id: str, archive: Archive) -> None:
        self._client = client
        self._job_id = job_id
        self._archive = archive
        self._what = f"download of {client._name(archive.key)}"
        #: Each range's tree hash by its first byte, as the workers fetch them.
        self._digests: dict[int, bytes] = {}

    def reader(self, budget: RangeBudget, throttle: Throttle) -> RangedReader:
        return RangedReader(
            self._archive.size,
            self._fill,
            budget,
            retrying=self._retrying,
            describe=self._describe,
            throttle=throttle,
            finish=self._finish,
        )

    def _retrying(self, attempt: Callable[[], None], pause: Callable[[float], None]) -> None:
        self._client._retrying(self._what, attempt, sleep=pause)

    def _describe(self, exc: Exception) -> Exception:
        if isinstance(exc, ClientError | BotoCoreError):
            return self._client._error(self._what, exc)
        if isinstance(exc, DamagedRange) or not isinstance(exc, StorageError):
            return exc
        return StorageError(f"{self._what} failed: {exc}")

    def _fill(self, part: Part) -> None:
        """One range of the job's output, checked against the tree hash the vault sent.

        The vault sends the range's tree hash when the range is tree-hash aligned, which ours
        always are; a server that leaves it out (moto) is still checked as a whole at the end.
        """
        client = self._client
        response = client._client.get_job_output(
            vaultName=client.vault, jobId=self._job_id, range=f"bytes={part.start}-{part.end}"
        )
        with contextlib.closing(response["body"]) as body:
            part.read_from(body)
        digest = tree_hash(part.view)
        sent = response.get("checksum")
        if sent and sent != digest.hex():
            raise DamagedRange(
                f"{self._what} failed: bytes {part.start}-{part.end} do not match the tree "
                "hash the vault sent with them"
            )
        self._digests[part.start] = digest

    def _finish(self) -> None:
        if not self._archive.size:
            return
        whole = combine([self._digests[start] for start in sorted(self._digests)]).hex()
        if whole != self._archive.tree_hash:
            raise StorageError(
                f"archive of {self._archive.key} has tree hash {whole}, not the "
                f"{self._archive.tree_hash} recorded at upload; it is damaged or the "
                "vault index is wrong (rebuild it from an inventory)"
            )

"""Reading an archive from its retrieval job's output, range by range, each range checked.

Job output is fetched (and held in memory, to be checked before use) in tree-hash-aligned
ranges; each range is checked against the tree hash the vault sends with it, and the ranges'
tree hashes combine into the archive's, checked against the index when the last range
arrives, so a reader that reaches the end has read exactly what was uploaded.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import StorageError
from btrsendd.storage.vault.archives import Archive, MiB
from btrsendd.storage.vault.client import DamagedRange, VaultClient
from btrsendd.storage.vault.treehash import combine, tree_hash

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Job output is fetched this much at a time by default.  A power of two MiB, so every range
#: is tree-hash aligned and the ranges' tree hashes combine into the archive's.
DEFAULT_READ_RANGE = 16 * MiB


class JobOutput(io.RawIOBase):
    """A retrieval job's output as a file: fetched range by range, each checked before use."""

    def __init__(self, client: VaultClient, job_id: str, archive: Archive, range_size: int) -> None:
        super().__init__()
        self._client = client
        self._job_id = job_id
        self._archive = archive
        self._range_size = range_size
        self._what = f"download of {client._name(archive.key)}"
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

    def _fetch(self, start: int, end: int) -> tuple[bytes, bytes]:
        """Bytes ``start`` to ``end`` and their tree hash, fetched again while damaged."""
        try:
            return self._client._retrying(
                f"{self._what} (bytes {start}-{end})", lambda: self._fetch_once(start, end)
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._client._error(self._what, exc) from exc

    def _fetch_once(self, start: int, end: int) -> tuple[bytes, bytes]:
        """One range of the job's output and its tree hash, checked against the vault's.

        The vault sends the range's tree hash when the range is tree-hash aligned, which ours
        always are; a server that leaves it out (moto) is still checked as a whole at the end.
        """
        client = self._client
        response = client._client.get_job_output(
            vaultName=client.vault, jobId=self._job_id, range=f"bytes={start}-{end}"
        )
        with contextlib.closing(response["body"]) as body:
            data = body.read()
        if len(data) != end - start + 1:
            raise DamagedRange(
                f"{self._what} failed: bytes {start}-{end} came back as {len(data)} bytes"
            )
        digest = tree_hash(data)
        sent = response.get("checksum")
        if sent and sent != digest.hex():
            raise DamagedRange(
                f"{self._what} failed: bytes {start}-{end} do not match the tree hash the "
                "vault sent with them"
            )
        return data, digest

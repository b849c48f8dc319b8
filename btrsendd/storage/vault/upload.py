"""Streams into a vault as multipart uploads (``multipart.py``): tree hashes and requests.

Parts are of one power-of-two size (the vault's rule), each sent with its SHA-256 tree hash,
which the vault checks before accepting the bytes; the whole archive's tree hash is assembled
from the parts' and checked again at completion.  An upload left open keeps its parts until
the vault drops it (it may after 24 hours without activity), so a failed one is aborted.
"""

from __future__ import annotations

import contextlib
from typing import cast

from botocore.exceptions import BotoCoreError, ClientError

from btrsendd.errors import StorageError
from btrsendd.storage.awserrors import ABORT_ATTEMPTS, error_code
from btrsendd.storage.multipart import MultipartUpload
from btrsendd.storage.vault.archives import MAX_PARTS, Archive, MiB, now
from btrsendd.storage.vault.client import NOT_FOUND, VaultClient
from btrsendd.storage.vault.treehash import combine, tree_hash


class VaultUpload(MultipartUpload[bytes, Archive]):
    """One key's upload into ``client``'s vault as an archive described by ``description``.

    Parts go up as copies: botocore's Glacier checksum hook takes bytes or files, not the
    bytearrays parts are read into.
    """

    thread_name = "vault-part"
    copies_parts = True

    def __init__(
        self, client: VaultClient, key: str, description: str, *, part_size: int, concurrency: int
    ) -> None:
        self.client = client
        self.key = key
        self.description = description
        self.fixed_part_size = part_size
        self.concurrency = concurrency
        self.what = f"upload of {client._name(key)}"
        self.upload_id = ""

    def part_size(self, number: int) -> int:
        return self.fixed_part_size

    def max_parts(self) -> int:
        return MAX_PARTS

    def too_many_parts(self, total: int) -> StorageError:
        return StorageError(
            f"upload to {self.client.description} failed: the stream exceeds {MAX_PARTS} "
            f"parts of {self.fixed_part_size // MiB} MiB, a vault's limit for one archive; "
            "lower pipeline.volume_size"
        )

    def error(self, exc: Exception) -> StorageError:
        return self.client._error(self.what, exc)

    def single(self, data: bytearray) -> Archive:
        """One request.  A retry after a first attempt that succeeded unseen leaves a second
        archive for the key; the index holds the later one, and an inventory (whose newest
        archive per key wins) agrees."""
        body = bytes(data)
        del data
        checksum = tree_hash(body).hex()
        response = self.client._retrying(
            self.what,
            lambda: self.client._client.upload_archive(
                vaultName=self.client.vault,
                archiveDescription=self.description,
                checksum=checksum,
                body=cast(bytes, self.client.throttle.body(body)),
            ),
        )
        return Archive(self.key, response["archiveId"], len(body), checksum, now())

    def begin(self) -> None:
        self.upload_id = self.client._retrying(
            self.what,
            lambda: self.client._client.initiate_multipart_upload(
                vaultName=self.client.vault,
                archiveDescription=self.description,
                partSize=str(self.fixed_part_size),
            )["uploadId"],
        )

    def send(self, number: int, offset: int, data: bytes | bytearray) -> bytes:
        body = bytes(data)  # already bytes (``copies_parts``): no copy
        digest = tree_hash(body)
        last = offset + len(body) - 1
        self.client._retrying(
            f"{self.what} (bytes {offset}-{last})",
            lambda: self.client._client.upload_multipart_part(
                vaultName=self.client.vault,
                uploadId=self.upload_id,
                checksum=digest.hex(),
                range=f"bytes {offset}-{last}/*",
                body=cast(bytes, self.client.throttle.body(body)),
            ),
        )
        return digest

    def complete(self, parts: list[bytes], total: int) -> Archive:
        """Complete the upload into an archive.

        Unlike S3, a vault cannot be asked afterwards what a completion that succeeded unseen
        produced; if a retry finds the upload gone, that is said, since the archive may exist
        (and be billed) until a rebuilt index lets ``verify --clean`` find it.
        """
        checksum = combine(parts).hex()
        attempts = 0

        def complete() -> str:
            nonlocal attempts
            attempts += 1
            try:
                return self.client._client.complete_multipart_upload(
                    vaultName=self.client.vault,
                    uploadId=self.upload_id,
                    archiveSize=str(total),
                    checksum=checksum,
                )["archiveId"]
            except ClientError as exc:
                if attempts == 1 or error_code(exc) != NOT_FOUND:
                    raise
                raise StorageError(
                    f"{self.what} failed: the vault completed it while the answer was lost, so "
                    f"its archive id is unknown; the archive (description naming {self.key}) "
                    "shows in the vault's next inventory"
                ) from exc

        archive_id = self.client._retrying(self.what, complete)
        return Archive(self.key, archive_id, total, checksum, now())

    def abort(self) -> None:
        """Abort the upload, best effort: the caller is already reporting the real failure."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client._retrying(
                f"abort of the {self.what}",
                lambda: self.client._client.abort_multipart_upload(
                    vaultName=self.client.vault, uploadId=self.upload_id
                ),
                attempts=ABORT_ATTEMPTS,
            )

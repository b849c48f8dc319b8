"""A backup's file index in storage: written while its send stream passes, stored beside its
manifest, read back by ``find``, ``diff`` and ``restore --path``.

The index is encoded like the volumes (compressed, then encrypted to the same recipients:
file names are as private as file contents) but stored in a class that reads back without
a thaw, so that knowing what a day held costs a download, never a retrieval.  It is written
as the stream passes into an unnamed temporary file in the state directory (root's, 0700;
unnamed, so a killed upload leaves nothing behind), and stored after the volumes, before the
manifest that lists it with its size and SHA-256.

Failing to index a stream (a command the indexer does not know, a full disk) costs the index,
never the backup: the upload goes on and says so.  Reading one trusts nothing: the stored
bytes must have the recorded size and SHA-256 before gpg sees them, the decoded bytes the
recorded size, and every record its exact shape (``storedform.read_index``); whatever is wrong
is one ``FileIndexError`` line.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO

from btrsendd.errors import PipelineError, StorageError
from btrsendd.fileindex.records import FileIndexError, Index
from btrsendd.fileindex.storedform import read_index
from btrsendd.layout import index_name
from btrsendd.log import get_logger
from btrsendd.manifest import shown
from btrsendd.model import Backup, FileIndexRef
from btrsendd.pipeline.codec import Codec, decode_volume, encode_stream
from btrsendd.pipeline.readers import CHUNK, Tap
from btrsendd.pipeline.sendindex import StreamIndexer
from btrsendd.pipeline.sendstream import StreamError
from btrsendd.repository import Repository
from btrsendd.storage.base import Lock, Readable, Stored

#: Encoded as one "volume": larger than any index can be.
_WHOLE = 2**62


class IndexBuilder:
    """The file index of one upload's send stream, built from the bytes ``tap`` lets by.

    Use as a context manager: the temporary file goes when the block ends.
    """

    def __init__(self, state_dir: Path) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=state_dir)
        self._indexer = StreamIndexer(self._file)
        self._finished = False
        #: Why the stream could not be indexed, once it could not.
        self.failure: str | None = None

    def __enter__(self) -> IndexBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def tap(self, stream: Readable) -> Readable:
        """``stream`` (already read through its ``StreamChecker``), indexed as it is read."""
        return Tap(stream, self._feed, self._finish)

    def _feed(self, data: memoryview | bytes) -> None:
        if self.failure is None:
            try:
                self._indexer.feed(data)
            except Exception as exc:
                self._failed(exc)

    def _finish(self) -> None:
        # A consumer may read past the end more than once: one end record.
        if self.failure is None and not self._finished:
            self._finished = True
            try:
                self._indexer.finish()
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Give up on the index, not the backup: the stream has passed its own check (the
        checker sees every byte first), so whatever the indexer cannot make of it (a
        command it does not know, a full disk, a bug) must not cost the only off-site
        copy.  ``store`` logs why."""
        self.failure = str(exc) if isinstance(exc, (StreamError, OSError)) else repr(exc)

    def store(
        self, repo: Repository, row: Backup, codec: Codec, lock: Lock | None
    ) -> FileIndexRef | None:
        """Store the index of ``row``'s whole stream, encoded with ``codec`` and locked with
        ``lock`` like its volumes; None (logged) if the stream could not be indexed."""
        try:
            self._file.flush()
        except OSError as exc:
            self._failed(exc)
        if self.failure is not None or not self._finished:
            get_logger(source=row.source, backup_id=row.id).warning(
                "index.skipped",
                reason=self.failure or "the send stream was not read to its end",
                detail="this backup restores as a whole as always, but find, diff and "
                "restore --path cannot see into it",
            )
            return None
        self._file.seek(0)
        name = index_name(codec.extension)
        key = repo.layout.key(row, name)

        def put(_: int, data: Readable) -> Stored:
            return repo.storage.put_stream(key, data, lock, readable=True)

        (stored,) = encode_stream(self._file, codec, _WHOLE, put)
        return FileIndexRef(
            name=name,
            stored_size=stored.stored_size,
            stored_sha256=stored.stored_sha256,
            raw_size=stored.raw_length,
            version=stored.version,
        )


def index_builder(repo: Repository) -> AbstractContextManager[IndexBuilder | None]:
    """What builds the file index of the stream about to be read; nothing on storage with
    no class readable without a thaw (a vault): reading an index there would cost the very
    retrieval it is for avoiding."""
    if repo.storage.has_readable_class:
        return IndexBuilder(repo.config.state_dir)
    return nullcontext(None)


def store_index(
    repo: Repository, row: Backup, index: IndexBuilder | None, codec: Codec, lock: Lock | None
) -> FileIndexRef | None:
    """Store ``row``'s file index, after its volumes and before the manifest that lists it;
    None (logged) where there is none."""
    if index is not None:
        return index.store(repo, row, codec, lock)
    get_logger(source=row.source, backup_id=row.id).info(
        "index.skipped",
        reason=f"{repo.storage.description} has no class readable without a retrieval",
        detail="find, diff and restore --path cannot see into this backup",
    )
    return None


def index_problem(repo: Repository, row: Backup, sizes: Mapping[str, int]) -> str | None:
    """What is wrong with ``row``'s recorded file index by ``sizes`` (a listing, by key), or
    None if it has none or it is stored with its recorded size."""
    ref = row.file_index
    if ref is None:
        return None
    key = repo.layout.key(row, ref.name)
    size = sizes.get(key)
    if size == ref.stored_size:
        return None
    where = f"the file index of backup {row.id} ({row.date}), {shown(key)},"
    if size is None:
        return f"{where} is missing from storage"
    return f"{where} is {size} bytes, {ref.stored_size} recorded"


def index_problems(repo: Repository, rows: Sequence[Backup], sizes: Mapping[str, int]) -> list[str]:
    """``verify``'s finding for each of ``rows`` whose file index is not stored as recorded."""
    return [
        f"{problem}: the backup still restores, but find, diff and restore --path cannot see "
        "into that day"
        for row in rows
        if (problem := index_problem(repo, row, sizes)) is not None
    ]


def load_index(repo: Repository, backup: Backup, gnupg_home: Path | None) -> Index:
    """The file index of ``backup``, downloaded, checked and decoded with the private key in
    ``gnupg_home`` (gpg's default keyring if None).

    ``FileIndexError`` for a backup without an index and for an index that is not the one
    recorded (damaged, replaced, forged); the storage's own errors (``StorageError``,
    ``NotThawedError``) as they are.
    """
    ref = backup.file_index
    what = f"backup {backup.id} ({backup.date})"
    if ref is None:
        raise FileIndexError(
            f"{what} has no file index (made before btrsendd kept them, or in a Glacier "
            "vault); restore it as a whole"
        )
    key = repo.layout.key(backup, ref.name)
    where = f"file index {shown(key)} of {what}"
    codec = Codec.stored_as(backup.compression, backup.recipients)
    state_dir = repo.config.state_dir
    with (
        tempfile.TemporaryFile(dir=state_dir) as stored,
        tempfile.TemporaryFile(dir=state_dir) as raw,
    ):
        _download(repo, key, ref, stored, where)
        stored.seek(0)
        decoded, recorded = 0, ref.raw_size

        def bounded(chunk: memoryview) -> None:
            # Decompressing a hostile object could fill the disk: stop past the recorded size.
            nonlocal decoded
            decoded += len(chunk)
            if decoded > recorded:
                raise FileIndexError(
                    f"{where}: it decodes to more than the {recorded} bytes recorded"
                )

        try:
            decode_volume(stored, codec, raw, gnupg_home=gnupg_home, inspect=bounded)
        except PipelineError as exc:
            raise FileIndexError(f"{where} cannot be decoded: {exc}") from None
        if decoded != ref.raw_size:
            raise FileIndexError(f"{where}: it decodes to {decoded} bytes, {ref.raw_size} recorded")
        raw.seek(0)
        index = read_index(raw, where)
    _check_same_stream(index, backup, where)
    return index


def _check_same_stream(index: Index, backup: Backup, where: str) -> None:
    """Refuse the index of another stream: its pieces would name offsets in this backup's
    volumes, which hold other bytes, and the volumes' own checks could not tell.  The SHA-256
    recorded ties an index to a manifest, but a manifest adopted by ``catalog rebuild``
    may pair one backup's volumes with another's index."""
    header, stream = index.header, backup.stream
    said = (header.uuid, header.parent_uuid)
    if index.stream_size != backup.raw_bytes or (
        stream is not None and said != (stream.uuid, stream.parent_uuid)
    ):
        theirs = f" of subvolume {stream.uuid}" if stream is not None else ""
        raise FileIndexError(
            f"{where} describes another send stream ({index.stream_size} bytes of subvolume "
            f"{header.uuid}) than the backup's ({backup.raw_bytes} bytes{theirs}): damaged "
            "or replaced"
        )


def _download(repo: Repository, key: str, ref: FileIndexRef, out: IO[bytes], where: str) -> None:
    """Copy the recorded version of the index into ``out``, refusing it unless it has the
    recorded size and SHA-256: only then does gpg see it."""
    sha = hashlib.sha256()
    size = 0
    with repo.storage.open_read(key, ref.version) as body:
        try:
            while size <= ref.stored_size and (chunk := body.read(CHUNK)):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read {shown(key)}: {exc.strerror or exc}") from None
    if size != ref.stored_size:
        stored = "more than that" if size > ref.stored_size else f"{size} bytes"
        raise FileIndexError(
            f"{where}: {ref.stored_size} bytes recorded, {stored} stored (damaged or replaced)"
        )
    if sha.hexdigest() != ref.stored_sha256:
        raise FileIndexError(
            f"{where}: its SHA-256 differs from the one recorded when it was backed up "
            "(damaged or replaced)"
        )
    out.flush()

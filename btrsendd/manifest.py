"""The per-backup manifest: the completion marker and the unit of disaster recovery.

A backup exists (for ``catalog rebuild``, ``verify`` and a new machine) exactly when its
``manifest.json`` exists, which is why it is written last, after every volume is stored, and
kept in STANDARD storage so reading it never needs a restore request.  It holds everything
needed to restore the backup without the catalog: chain links, codec, and the size and SHA-256
of every volume before and after encoding.

The format is versioned; a reader refuses versions it does not know instead of guessing.

A manifest is read from a bucket that others may be able to write to, so reading one trusts
nothing (``manifest_schema.py`` checks every field): whatever is wrong, the reader raises
``ManifestError``, one line naming the field, and never anything else: one bad object costs
one backup, not the whole ``catalog rebuild``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from btrsendd import __version__
from btrsendd.errors import OperationalError, StorageError
from btrsendd.manifest_schema import FORMAT, VERSION, parse
from btrsendd.model import Backup, FileIndexRef, StreamIdentity, Volume
from btrsendd.storage.base import Storage
from btrsendd.strictjson import Invalid, Object, loads

#: A manifest takes about 400 bytes per volume: 64 MiB holds 160,000 volumes (over 150 TiB in
#: the default 1 GiB volumes).  Anything larger is refused unread: parsing it could exhaust
#: memory.
MAX_MANIFEST_BYTES = 64 * 1024**2


class ManifestError(OperationalError):
    """A manifest that is not one btrsendd can trust: ``detail`` says which field and why."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{shown(where)}: {detail}")


def shown(text: str) -> str:
    """``text`` as it may be printed on one line: as it is if printable, else quoted.

    Keys and names from storage can hold newlines, control characters or (from a file
    name that is not UTF-8) lone surrogates, which would split or break an output line.
    """
    return text if text.isprintable() else repr(text)


@dataclass(frozen=True)
class Manifest:
    backup: Backup
    volumes: tuple[Volume, ...]

    def object_names(self) -> list[str]:
        """The names of the objects it lists in its backup's directory, besides itself."""
        index = self.backup.file_index
        return [v.name for v in self.volumes] + ([] if index is None else [index.name])

    def to_json(self) -> bytes:
        b = self.backup
        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "written_by": f"btrsendd {__version__}",
            "source": b.source,
            "id": b.id,
            "date": b.date.isoformat(),
            "kind": b.kind,
            "parent": b.parent_id,
            "parent_date": None if b.parent_date is None else b.parent_date.isoformat(),
            "chain": b.chain,
            "snapshot": b.snapshot,
            "snapshot_uuid": b.snapshot_uuid,
            "parent_uuid": b.parent_uuid,
            "compression": b.compression,
            "encryption": {
                "mode": "gpg" if b.recipients else "none",
                "recipients": list(b.recipients),
            },
            "storage_class": b.storage_class,
            "raw_bytes": b.raw_bytes,
            "stored_bytes": b.stored_bytes,
            "created_at": b.created_at,
            "completed_at": b.completed_at,
            # Added within version 1 (absent before btrsendd checked send streams): what the
            # stream said it is, so a rebuilt catalog can check chain links without a thaw.
            "stream": None if b.stream is None else _stream_json(b.stream),
            # Added within version 1 too: the file index, which find and diff read.
            "file_index": None if b.file_index is None else _index_json(b.file_index),
            "volumes": [
                {
                    "index": v.index,
                    "name": v.name,
                    "raw_offset": v.raw_offset,
                    "raw_length": v.raw_length,
                    "raw_sha256": v.raw_sha256,
                    "stored_size": v.stored_size,
                    "stored_sha256": v.stored_sha256,
                    "stored_checksum": v.stored_checksum,
                }
                for v in self.volumes
            ],
        }
        return json.dumps(doc, indent=2, sort_keys=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str, *, today: date | None = None) -> Manifest:
        """Parse and check a manifest; ``where`` (its key) names it in errors.

        ``today`` (the local date by default) decides what is a future backup: one dated
        later than tomorrow, the most a clock in another time zone can be ahead.
        """
        if (too_large := oversized(len(data))) is not None:
            raise ManifestError(where, too_large)
        try:
            doc = Object(loads(data), "", "a JSON object")
            return cls(*parse(doc, today or date.today()))
        except Invalid as exc:
            raise ManifestError(where, str(exc)) from None


def read_manifest(storage: Storage, key: str, size: int, version: str | None = None) -> Manifest:
    """Read and check the manifest at ``key``, whose listed size is ``size``.

    An oversized object is refused before a byte is read, and the read itself stops past
    the limit in case the object is not what the listing said (a local file that is a
    symlink to a device, an object replaced since).
    """
    if (too_large := oversized(size)) is not None:
        raise ManifestError(key, too_large)
    with storage.open_read(key, version) as body:
        try:
            data = body.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise StorageError(f"cannot read {shown(key)}: {exc.strerror or exc}") from None
    return Manifest.from_json(data, key)


def oversized(size: int) -> str | None:
    """Why a manifest of ``size`` bytes is refused unread, or None if it is not too large."""
    if size <= MAX_MANIFEST_BYTES:
        return None
    return f"{size} bytes, larger than any manifest btrsendd writes (at most {MAX_MANIFEST_BYTES})"


def _index_json(ref: FileIndexRef) -> dict[str, Any]:
    return {
        "name": ref.name,
        "stored_size": ref.stored_size,
        "stored_sha256": ref.stored_sha256,
        "raw_size": ref.raw_size,
    }


def _stream_json(stream: StreamIdentity) -> dict[str, Any]:
    return {
        "version": stream.version,
        "name": stream.name,
        "uuid": stream.uuid,
        "ctransid": stream.ctransid,
        "parent_uuid": stream.parent_uuid,
        "parent_ctransid": stream.parent_ctransid,
    }

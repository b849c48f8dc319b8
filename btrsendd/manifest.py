"""The per-backup manifest: the completion marker and the unit of disaster recovery.

A backup exists (for ``catalog rebuild``, ``verify`` and a new machine) exactly when its
``manifest.json`` exists, which is why it is written last, after every volume is stored, and
kept in STANDARD storage so reading it never needs a restore request.  It holds everything
needed to restore the backup without the catalog: chain links, codec, and the size and SHA-256
of every volume before and after encoding.

The format is versioned; a reader refuses versions it does not know instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from btrsendd import __version__
from btrsendd.catalog import BackupRow, StreamIdentity, Volume
from btrsendd.errors import OperationalError

FORMAT = "btrsendd-manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    backup: BackupRow
    volumes: tuple[Volume, ...]

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
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest; ``where`` (its key) names it in errors."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError("not a btrsendd manifest")
            if doc.get("version") != VERSION:
                raise OperationalError(
                    f"{where}: manifest version {doc.get('version')} is not one this btrsendd "
                    f"reads (it reads {VERSION}); upgrade btrsendd"
                )
            volumes = tuple(
                Volume(
                    index=int(v["index"]),
                    name=str(v["name"]),
                    raw_offset=int(v["raw_offset"]),
                    raw_length=int(v["raw_length"]),
                    raw_sha256=str(v["raw_sha256"]),
                    stored_size=int(v["stored_size"]),
                    stored_sha256=str(v["stored_sha256"]),
                    # Added within version 1: manifests written before it lack the field.
                    stored_checksum=v.get("stored_checksum"),
                )
                for v in doc["volumes"]
            )
            backup = BackupRow(
                id=str(doc["id"]),
                source=str(doc["source"]),
                date=date.fromisoformat(doc["date"]),
                kind="full" if doc["kind"] == "full" else "incremental",
                parent_id=doc["parent"],
                parent_date=None
                if doc["parent_date"] is None
                else date.fromisoformat(doc["parent_date"]),
                chain=str(doc["chain"]),
                state="complete",
                snapshot=doc.get("snapshot"),
                snapshot_uuid=doc.get("snapshot_uuid"),
                parent_uuid=doc.get("parent_uuid"),
                compression=str(doc["compression"]),
                recipients=tuple(doc["encryption"]["recipients"]),
                storage_class=str(doc["storage_class"]),
                raw_bytes=int(doc["raw_bytes"]),
                stored_bytes=int(doc["stored_bytes"]),
                volume_count=len(volumes),
                created_at=str(doc["created_at"]),
                completed_at=doc.get("completed_at"),
                stream=None if doc.get("stream") is None else _stream_from_json(doc["stream"]),
            )
        except OperationalError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise OperationalError(f"{where}: unreadable manifest ({exc})") from None
        return cls(backup, volumes)


def _stream_json(stream: StreamIdentity) -> dict[str, Any]:
    return {
        "version": stream.version,
        "name": stream.name,
        "uuid": stream.uuid,
        "ctransid": stream.ctransid,
        "parent_uuid": stream.parent_uuid,
        "parent_ctransid": stream.parent_ctransid,
    }


def _stream_from_json(doc: dict[str, Any]) -> StreamIdentity:
    return StreamIdentity(
        version=int(doc["version"]),
        name=str(doc["name"]),
        uuid=str(doc["uuid"]),
        ctransid=int(doc["ctransid"]),
        parent_uuid=doc.get("parent_uuid"),
        parent_ctransid=doc.get("parent_ctransid"),
    )

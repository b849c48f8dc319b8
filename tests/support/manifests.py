"""Manifests for the manifest tests: one as btrsendd writes it (``good``), parsed as a reader
would (``parse``), with the backup ids and volumes it holds."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from btrsendd.catalog import Catalog
from btrsendd.manifest import Manifest
from btrsendd.model import FileIndexRef, StreamIdentity, Volume

FULL = "2000-01-01-full-1b4684"
INC = "2000-01-07-inc-0a1b2c"
TODAY = date(2000, 2, 1)


def stored_volumes(suffix: str = "btrfs.zst.gpg") -> tuple[Volume, ...]:
    return (
        Volume(0, f"vol-00000.{suffix}", 0, 100, "a" * 64, 60, "b" * 64, "c2hh-2"),
        Volume(1, f"vol-00001.{suffix}", 100, 50, "c" * 64, 31, "d" * 64, None),
    )


#: The file index ``good`` lists.
FILE_INDEX = FileIndexRef("file-index.zst.gpg", 40, "e" * 64, 400)


def good(kind: str = "incremental") -> dict[str, Any]:
    """A manifest as btrsendd writes it (through ``to_json``), as a JSON document."""
    with Catalog(Path(":memory:")) as cat:
        cat.begin_backup(
            id=FULL,
            source="data",
            day=date(2000, 1, 1),
            kind="full",
            parent_id=None,
            chain=FULL,
            snapshot="2000-01-01",
            snapshot_uuid="ab" * 16,
            parent_uuid=None,
            compression="zstd",
            recipients=["0123456789ABCDEF0123456789ABCDEF01234567"],
            storage_class="DEEP_ARCHIVE",
        )
        if kind == "incremental":
            cat.begin_backup(
                id=INC,
                source="data",
                day=date(2000, 1, 7),
                kind="incremental",
                parent_id=FULL,
                chain=FULL,
                snapshot="2000-01-07",
                snapshot_uuid="cd" * 16,
                parent_uuid="ab" * 16,
                compression="zstd",
                recipients=["0123456789ABCDEF0123456789ABCDEF01234567"],
                storage_class="DEEP_ARCHIVE",
            )
        bid = FULL if kind == "full" else INC
        for volume in stored_volumes():
            cat.add_volume(bid, volume)
        parent = ("ab" * 16, 7) if kind == "incremental" else (None, None)
        cat.set_stream(bid, StreamIdentity(1, "2000-01-07", "cd" * 16, 9, *parent))
        cat.set_file_index(bid, FILE_INDEX)
        cat.complete_backup(bid, "2000-01-07T00:10:00+00:00")
        row = cat.backup(bid)
        assert row is not None
        manifest = Manifest(row, tuple(cat.volumes(bid)))
    doc: dict[str, Any] = json.loads(manifest.to_json())
    return doc


def parse(doc: object, today: date = TODAY) -> Manifest:
    return Manifest.from_json(json.dumps(doc).encode(), "data/x/manifest.json", today=today)

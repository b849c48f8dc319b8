"""The manifest's schema (``manifest_schema.py``), rule by rule: each way a field can be wrong
is one ``ManifestError`` naming the field, so a hostile or damaged manifest in a bucket is
refused with a line that says what is wrong in it.  Reading, JSON that is not a manifest, and
random input are in ``test_manifest.py``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest

from btrsendd.manifest import ManifestError
from tests.support.manifests import INC, good, parse

Mutation = Callable[[dict[str, Any]], object]


def setting(path: str, value: object) -> Mutation:
    """Set the field at ``path`` (``volumes.1.raw_offset``) to ``value``."""

    def mutate(doc: dict[str, Any]) -> object:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return doc

    return mutate


def both(first: Mutation, second: Mutation) -> Mutation:
    return lambda doc: second(first(doc))  # type: ignore[arg-type]


def dropping(name: str) -> Mutation:
    return lambda doc: {k: v for k, v in doc.items() if k != name}


def shifted(days: int) -> Mutation:
    """The incremental moved ``days`` days later, its id with it."""

    def mutate(doc: dict[str, Any]) -> object:
        day = date(2000, 1, 7) + timedelta(days=days)
        return {**doc, "date": day.isoformat(), "id": f"{day.isoformat()}-inc-0a1b2c"}

    return mutate


# (mutation, the error after the key): one per rule of the schema.
BAD = {
    "null": (lambda _: None, "document: expected a JSON object, got null"),
    "a list": (lambda _: [], "document: expected a JSON object, got a list"),
    "a string for an int": (
        setting("raw_bytes", "150"),
        "raw_bytes: expected an integer, got a string",
    ),
    "a bool for an int": (
        setting("volumes.0.index", False),
        "volumes[0].index: expected an integer, got a boolean",
    ),
    "a float for an int": (
        setting("stored_bytes", 91.0),
        "stored_bytes: expected an integer, got a number",
    ),
    "a huge number": (
        setting("volumes.0.stored_size", 10**30),
        "volumes[0].stored_size: an integer of 31 digits is out of range",
    ),
    "a negative size": (
        setting("volumes.1.raw_length", -1),
        "volumes[1].raw_length: -1 is out of range",
    ),
    "sizes that do not add up": (
        setting("raw_bytes", 151),
        "raw_bytes: 151, but the volumes' raw_length add up to 150",
    ),
    "no volumes": (setting("volumes", []), "volumes: empty: a backup has at least one volume"),
    "a gap between volumes": (
        setting("volumes.1.raw_offset", 99),
        "volumes[1].raw_offset: 99, but volume 0 ends at 100",
    ),
    "volumes out of order": (
        setting("volumes.1.index", 0),
        "volumes[1].index: 0, but it is volume 1 in the list",
    ),
    "a volume named for another codec": (
        setting("volumes.1.name", "vol-00001.btrfs.gz.gpg"),
        "volumes[1].name: vol-00001.btrfs.gz.gpg, but volume 1 is vol-00001.btrfs.zst.gpg",
    ),
    "a volume path": (
        setting("volumes.0.name", "../../etc/passwd"),
        "volumes[0].name: '../../etc/passwd' is not a valid volume name",
    ),
    "an upper-case SHA-256": (
        setting("volumes.0.raw_sha256", "A" * 64),
        "volumes[0].raw_sha256: 'AAAA",
    ),
    "a multi-line checksum": (
        setting("volumes.0.stored_checksum", "a\nb"),
        "volumes[0].stored_checksum: 'a\\nb' is not a storage checksum",
    ),
    "../ in an id": (
        setting("id", "../2000-01-07-inc-0a1b2c"),
        "id: '../2000-01-07-inc-0a1b2c' is not a valid backup id name",
    ),
    "a source with a slash": (
        setting("source", "data/../x"),
        "source: 'data/../x' is not a valid source name",
    ),
    "a snapshot path": (setting("snapshot", "/"), "snapshot: '/' is not a valid snapshot name"),
    "an id of another day": (
        setting("date", "2000-01-08"),
        "id: 2000-01-07-inc-0a1b2c is not dated 2000-01-08",
    ),
    "an impossible day": (setting("date", "2000-02-30"), "date: '2000-02-30' is not a real day"),
    "a date in another form": (
        setting("date", "20000107"),
        "date: '20000107' is not a date (YYYY-MM-DD)",
    ),
    "a future date": (
        shifted(30),
        "date: 2000-02-06 is in the future (later than tomorrow, 2000-02-02)",
    ),
    "a kind its id denies": (
        setting("kind", "full"),
        "id: 2000-01-07-inc-0a1b2c does not name a full backup",
    ),
    "an unknown kind": (
        setting("kind", "differential"),
        "kind: 'differential' is not one of full, incremental",
    ),
    "an incremental without parent": (setting("parent", None), "parent: null in an incremental"),
    "a parent from later": (
        setting("parent", "2000-01-09-full-1b4684"),
        "parent_date: 2000-01-01, but the parent is 2000-01-09-full-1b4684",
    ),
    "a parent of the same day": (
        both(setting("parent", "2000-01-07-full-1b4684"), setting("parent_date", "2000-01-07")),
        "parent_date: 2000-01-07 is not before the backup's date",
    ),
    "a chain that is not a full": (
        setting("chain", "2000-01-01-inc-1b4684"),
        "chain: 2000-01-01-inc-1b4684 is not a full backup made before the parent",
    ),
    "an unknown compression": (
        setting("compression", "lzma"),
        "compression: 'lzma' is not one of gzip, none, zstd",
    ),
    "recipients that are not a list": (
        setting("encryption.recipients", "ABCD"),
        "encryption.recipients: expected a list, got a string",
    ),
    "a recipient with a comma": (
        setting("encryption.recipients", ["A,B"]),
        "encryption.recipients[0]: 'A,B' is not a gpg recipient",
    ),
    "a recipient object": (
        setting("encryption.recipients", [{"fpr": "A"}]),
        "encryption.recipients[0]: expected a string, got an object",
    ),
    "gpg without recipients": (
        setting("encryption.recipients", []),
        "encryption.recipients: empty with mode gpg",
    ),
    "an unknown storage class": (
        setting("storage_class", "TAPE"),
        "storage_class: 'TAPE' is not one of",
    ),
    "a timestamp without zone": (
        setting("created_at", "2000-01-07T00:00:00"),
        "created_at: '2000-01-07T00:00:00' has no UTC offset",
    ),
    "a stream without parent": (
        setting("stream.parent_uuid", None),
        "stream.parent_ctransid: set without parent_uuid",
    ),
    "a stream of an unknown version": (
        setting("stream.version", 9),
        "stream.version: 9 is out of range (1 to 3)",
    ),
    "a stream name that is a path": (
        setting("stream.name", "../x"),
        "stream.name: '../x' is not a safe subvolume name",
    ),
    "a ctransid sqlite cannot store": (
        setting("stream.ctransid", 2**64 - 1),
        "stream.ctransid: 18446744073709551615 is out of range",
    ),
    "a stream that is not an object": (
        setting("stream", "cd" * 16),
        "stream: expected an object, got a string",
    ),
    "an index named for another codec": (
        setting("file_index.name", "file-index.gz"),
        "file_index.name: 'file-index.gz', but this backup's index is file-index.zst.gpg",
    ),
    "an index name that is a path": (
        setting("file_index.name", "../../etc/file-index.zst.gpg"),
        "file_index.name: '../../etc/file-index.zst.gpg', but this backup's index is",
    ),
    "an empty index": (
        setting("file_index.stored_size", 0),
        "file_index.stored_size: 0 is out of range (1 to 9007199254740992)",
    ),
    "an index of a boolean size": (
        setting("file_index.raw_size", True),
        "file_index.raw_size: expected an integer, got a boolean",
    ),
    "an index without its checksum": (
        setting("file_index.stored_sha256", None),
        "file_index.stored_sha256: expected a string, got null",
    ),
    "an index without its raw size": (
        lambda doc: {
            **doc,
            "file_index": {
                "name": "file-index.zst.gpg",
                "stored_size": 1,
                "stored_sha256": "e" * 64,
            },
        },
        "file_index.raw_size: missing",
    ),
    "an index that is not an object": (
        setting("file_index", ["file-index.zst.gpg"]),
        "file_index: expected an object, got a list",
    ),
    "a missing field": (dropping("chain"), "chain: missing"),
    "an unknown format": (
        setting("format", "restic"),
        "format: 'restic' is not one of btrsendd-manifest",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_every_violation_is_one_error_naming_the_field(name: str) -> None:
    mutate, expected = BAD[name]
    with pytest.raises(ManifestError) as caught:
        parse(mutate(good()))
    message = str(caught.value)
    assert message.startswith("data/x/manifest.json: " + expected), message
    assert "\n" not in message and len(message) < 300
    assert caught.value.detail == message.removeprefix("data/x/manifest.json: ")


def test_a_full_backup_has_no_parent_and_starts_its_chain() -> None:
    for field, value, expected in [
        ("parent", INC, "parent: set, but a full backup has no parent"),
        ("parent_uuid", "ab" * 16, "parent_uuid: set, but a full backup has no parent"),
        ("chain", "2000-01-01-full-000000", "chain: 2000-01-01-full-000000, but a full backup"),
        ("stream.parent_ctransid", 3, "stream.parent_ctransid: set without parent_uuid"),
    ]:
        with pytest.raises(ManifestError, match=f"^data/x/manifest.json: {expected}"):
            parse(setting(field, value)(good("full")))
    full = good("full")
    full["stream"].update(parent_uuid="ab" * 16, parent_ctransid=3)
    with pytest.raises(ManifestError, match=r"stream\.parent_uuid: set, but a full backup"):
        parse(full)
    assert parse(good("full"), today=date(1999, 12, 31)).backup.date == date(2000, 1, 1)

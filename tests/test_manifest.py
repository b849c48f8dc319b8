"""Manifests are read against a strict schema: whatever a bucket holds, the reader either
returns a manifest btrsendd can trust or raises ``ManifestError`` naming the field."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btrsendd.catalog import Catalog
from btrsendd.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestError,
    read_manifest,
    shown,
)
from btrsendd.model import StreamIdentity, Volume
from btrsendd.storage.local.directory import LocalStorage

FULL = "2000-01-01-full-1b4684"
INC = "2000-01-07-inc-0a1b2c"
TODAY = date(2000, 2, 1)


def stored_volumes(suffix: str = "btrfs.zst.gpg") -> tuple[Volume, ...]:
    return (
        Volume(0, f"vol-00000.{suffix}", 0, 100, "a" * 64, 60, "b" * 64, "c2hh-2"),
        Volume(1, f"vol-00001.{suffix}", 100, 50, "c" * 64, 31, "d" * 64, None),
    )


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
        cat.complete_backup(bid, "2000-01-07T00:10:00+00:00")
        row = cat.backup(bid)
        assert row is not None
        manifest = Manifest(row, tuple(cat.volumes(bid)))
    doc: dict[str, Any] = json.loads(manifest.to_json())
    return doc


def parse(doc: object, today: date = TODAY) -> Manifest:
    return Manifest.from_json(json.dumps(doc).encode(), "data/x/manifest.json", today=today)


def test_a_manifest_reads_back_as_written() -> None:
    for kind in ("full", "incremental"):
        doc = good(kind)
        manifest = parse(doc)
        assert json.loads(manifest.to_json()) == doc
        assert manifest.volumes == stored_volumes()
        assert manifest.backup.stream is not None
        assert manifest.backup.volume_count == 2


def test_manifests_of_earlier_version_1_writers_still_read() -> None:
    """Written before volumes carried the backend's checksum, and before stream identities."""
    doc = good()
    for volume in doc["volumes"]:
        del volume["stored_checksum"]
    del doc["stream"]
    old = parse(doc)
    assert old.volumes == tuple(replace(v, stored_checksum=None) for v in stored_volumes())
    assert old.backup.stream is None
    # Fields a later writer adds within version 1 are ignored, not refused.
    assert parse({**good(), "added_later": {"x": 1}}) == parse(good())


def test_an_unknown_version_asks_for_an_upgrade() -> None:
    with pytest.raises(
        ManifestError, match=r"^k: version: manifest version 99 .* upgrade btrsendd$"
    ):
        Manifest.from_json(b'{"format": "btrsendd-manifest", "version": 99}', "k")
    with pytest.raises(ManifestError, match=r"^k: format: missing$"):
        Manifest.from_json(b"{}", "k")


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


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "not JSON (Expecting property name"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text (byte 0)"),
        (b"[" * 100_000, "not JSON that btrsendd writes (nested too deeply)"),
        (b'{"format": 1, "format": 2}', "not JSON (duplicate key 'format')"),
        (b'{"raw_bytes": NaN}', "not JSON (NaN is not a JSON number)"),
        (b"9" * 5000, "not JSON (Exceeds the limit (4300 digits)"),
        (b" " * (MAX_MANIFEST_BYTES + 1), f"{MAX_MANIFEST_BYTES + 1} bytes, larger than any"),
    ],
    ids=["invalid", "not-utf8", "deep", "duplicate", "nan", "huge-int", "oversized"],
)
def test_text_that_is_not_a_manifest(data: bytes, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(data, "k")
    assert caught.value.detail.startswith(expected), caught.value.detail


def test_oversized_objects_are_refused_before_reading(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    # Never read: the object does not even exist, the listing's size is enough.
    with pytest.raises(ManifestError, match=r"^a/b/manifest.json: 67108865 bytes, larger"):
        read_manifest(storage, "a/b/manifest.json", MAX_MANIFEST_BYTES + 1)
    # An object that grew after it was listed (replaced meanwhile): the read stops.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_bytes(b"{}")
    [listed] = storage.list("a/")
    os.truncate(tmp_path / "a" / "manifest.json", MAX_MANIFEST_BYTES + 100)  # sparse
    with pytest.raises(ManifestError, match=r"67108865 bytes, larger"):
        read_manifest(storage, listed.key, listed.size)


def test_keys_and_names_are_shown_on_one_line() -> None:
    assert shown("host1/data/2000-01-01-full-abcdef/manifest.json").startswith("host1/")
    assert shown("evil\nbtrsendd: error: forged") == "'evil\\nbtrsendd: error: forged'"
    assert shown("bad\udcff") == "'bad\\udcff'"
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(b"null", "x\n/manifest.json")
    assert str(caught.value).startswith("'x\\n/manifest.json': ")


# -- whatever the bytes, only ManifestError or a manifest -------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["", "..", "/", "data", FULL, INC, "2000-01-07", "ab" * 16, "a" * 64]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(value: object, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document: the document itself and each key or index inside it."""
    found = [here]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*here, key))
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            found += paths(inner, (*here, n))
    return found


def mutated(doc: dict[str, Any], path: tuple[Any, ...], action: str, value: object) -> object:
    """``doc`` with the value at ``path`` replaced, removed, or given an unknown sibling."""
    if not path:
        return value
    doc = copy.deepcopy(doc)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "remove":
        del parent[last]
    elif isinstance(parent, dict):
        parent["unknown"] = value
    else:
        parent.append(value)
    return doc


def assert_trustworthy(data: bytes) -> None:
    """``from_json`` raises ``ManifestError`` or returns what a catalog can hold and what
    reads back the same."""
    try:
        manifest = Manifest.from_json(data, "k", today=TODAY)
    except ManifestError as exc:
        assert "\n" not in str(exc)
        return
    assert Manifest.from_json(manifest.to_json(), "k", today=TODAY) == manifest
    b = manifest.backup
    with Catalog(Path(":memory:")) as cat:
        if b.parent_id is not None and b.parent_date is not None:
            stand_in = replace(b, id=b.parent_id, date=b.parent_date, kind="full", parent_id=None)
            cat.insert_complete(stand_in, ())
        cat.insert_complete(b, manifest.volumes)
        assert cat.volumes(b.id) == list(manifest.volumes)


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.sampled_from(["full", "incremental"]), st.data())
def test_mutated_manifests_raise_only_manifest_error(kind: str, data: st.DataObject) -> None:
    doc = good(kind)
    path = data.draw(st.sampled_from(paths(doc)))
    action = data.draw(st.sampled_from(["replace", "remove", "add"]))
    value = data.draw(JSON)
    if action == "remove" and not path:
        action = "replace"
    assert_trustworthy(json.dumps(mutated(doc, path, action, value)).encode())


@FAST
@given(JSON)
def test_random_json_raises_only_manifest_error(value: object) -> None:
    assert_trustworthy(json.dumps(value).encode())


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_manifest_error(data: bytes) -> None:
    assert_trustworthy(data)

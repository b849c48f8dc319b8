"""Manifests are read against a strict schema: whatever a bucket holds, the reader either
returns a manifest btrsendd can trust or raises ``ManifestError`` naming the field.

Here: a manifest reads back as written (also one of an earlier writer), text that is not a
manifest, oversized objects, names shown on one line, and random documents and bytes.  The
schema's rules one by one are in ``test_manifest_schema.py``."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
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
from btrsendd.storage.local.directory import LocalStorage
from tests.support.manifests import FILE_INDEX, FULL, INC, TODAY, good, parse, stored_volumes


def test_a_manifest_reads_back_as_written() -> None:
    for kind in ("full", "incremental"):
        doc = good(kind)
        manifest = parse(doc)
        assert json.loads(manifest.to_json()) == doc
        assert manifest.volumes == stored_volumes()
        assert manifest.backup.stream is not None
        assert manifest.backup.file_index == FILE_INDEX
        assert manifest.backup.volume_count == 2


def test_manifests_of_earlier_version_1_writers_still_read() -> None:
    """Written before volumes carried the backend's checksum, before stream identities, and
    before file indexes."""
    doc = good()
    for volume in doc["volumes"]:
        del volume["stored_checksum"]
    del doc["stream"]
    del doc["file_index"]
    old = parse(doc)
    assert old.volumes == tuple(replace(v, stored_checksum=None) for v in stored_volumes())
    assert old.backup.stream is None
    assert old.backup.file_index is None
    assert parse({**good(), "file_index": None}).backup.file_index is None
    # Fields a later writer adds within version 1 are ignored, not refused.
    assert parse({**good(), "added_later": {"x": 1}}) == parse(good())


def test_an_unknown_version_asks_for_an_upgrade() -> None:
    with pytest.raises(
        ManifestError, match=r"^k: version: manifest version 99 .* upgrade btrsendd$"
    ):
        Manifest.from_json(b'{"format": "btrsendd-manifest", "version": 99}', "k")
    with pytest.raises(ManifestError, match=r"^k: format: missing$"):
        Manifest.from_json(b"{}", "k")


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

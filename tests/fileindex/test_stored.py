"""A backup's file index in storage (``fileindex/stored.py``): stored beside the manifest,
encrypted and readable without a thaw, read back record for record, and refused with one
line when it is not what was stored."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from btrsendd.fileindex.records import FileIndexError, Header, Write
from btrsendd.fileindex.stored import IndexBuilder, load_index
from btrsendd.fileindex.storedform import IndexWriter
from btrsendd.layout import MANIFEST_NAME
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.vaultserver import VaultServer
from tests.support.backups import (
    OnBackend,
    back_up,
    backup_prefix,
    error_lines,
    events,
    world_storage,
)
from tests.support.indexes import fresh_index, repository, row_of, stored_index
from tests.support.sendstreams import small_stream
from tests.support.trees import mutate, populate
from tests.support.world import World, local_world, make_world

DAYS = [date(2000, 1, 1), date(2000, 1, 7), date(2000, 1, 14)]


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_every_backup_stores_the_index_of_its_stream(on_backend: OnBackend, backend: str) -> None:
    """On moto the volumes are DEEP_ARCHIVE (unreadable until thawed); the index is not."""
    world = on_backend(backend)
    backups = back_up(world, DAYS)
    storage = world_storage(world)
    parent: Path | None = None
    for backup in backups:
        snapshot = world.snapshots / backup["date"]
        index = stored_index(world, backup["id"])
        assert index.header.subvolume == backup["date"]
        assert (index.header.parent_uuid is None) == (backup["kind"] == "full")
        assert index == fresh_index(snapshot, parent), "the index is not its stream's"
        parent = snapshot

        directory = f"{backup_prefix(world)}{backup['id']}/"
        listed = {o.key.rpartition("/")[2]: o for o in storage.list(directory)}
        stored = listed["file-index.zst.gpg"]
        assert stored.storage_class in ("STANDARD", "local")
        manifest = json.loads(storage.get_bytes(directory + MANIFEST_NAME))
        assert manifest["file_index"]["name"] == "file-index.zst.gpg"
        assert manifest["file_index"]["stored_size"] == stored.size
        # Encrypted: the file names in it are as private as the data.
        with storage.open_read(directory + "file-index.zst.gpg") as body:
            data = body.read()
        assert hashlib.sha256(data).hexdigest() == manifest["file_index"]["stored_sha256"]
        assert b"btrsendd-file-index" not in data and not data.startswith(b"\x28\xb5\x2f\xfd")


def test_indexing_never_changes_or_stops_the_stream(tmp_path: Path) -> None:
    """What the upload reads through the builder is the stream as it was; a stream it cannot
    index (here: not a send stream at all) only leaves it without an index, saying why."""
    stream = small_stream()
    with IndexBuilder(tmp_path) as builder:
        tapped = builder.tap(io.BytesIO(stream))
        assert b"".join(iter(lambda: tapped.read(1000), b"")) == stream
        assert tapped.read(1000) == b""  # read past the end again: one end record
        assert builder.failure is None
    with IndexBuilder(tmp_path) as builder:
        garbage = b"\x00" * 100_000
        tapped = builder.tap(io.BytesIO(garbage))
        assert b"".join(iter(lambda: tapped.read(4096), b"")) == garbage
        assert builder.failure is not None
    assert list(tmp_path.iterdir()) == [], "the temporary index outlived its builder"


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path) -> World:
    return local_world(make_btrfs("src"), tmp_path, gpg_key)


def index_path(world: World, backup: dict[str, object]) -> Path:
    return world.work / "archive" / "data" / str(backup["id"]) / "file-index.zst.gpg"


def forge(world: World, backup_id: str, data: bytes, raw_size: int = 1) -> str:
    """Store ``data`` as the backup's index and make the catalog record it as stored (as a
    forged manifest adopted by a rebuild would): only what comes after the SHA-256 check
    stands between it and the reader.  Returns the error ``load_index`` raises."""
    path = world.work / "archive" / "data" / backup_id / "file-index.zst.gpg"
    path.write_bytes(data)
    with repository(world) as repo:
        row = row_of(repo, backup_id)
        assert row.file_index is not None
        ref = replace(
            row.file_index,
            stored_size=len(data),
            stored_sha256=hashlib.sha256(data).hexdigest(),
            raw_size=raw_size,
        )
        repo.catalog.set_file_index(backup_id, ref)
        with pytest.raises(FileIndexError) as caught:
            load_index(repo, row_of(repo, backup_id), world.key.secret_home)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert f"backup {backup_id} (2000-01-01)" in message, message
    return message


def gpg_encrypted(world: World, data: bytes) -> bytes:
    """``data`` compressed and encrypted as btrsendd stores an index, by the key's owner."""
    zstd = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True)
    return subprocess.run(
        [
            *("gpg", "--homedir", str(world.key.public_home), "--batch"),
            *("--trust-model", "always", "--encrypt", "--recipient", world.key.fingerprint),
        ],
        input=zstd.stdout,
        capture_output=True,
        check=True,
    ).stdout


def test_a_damaged_or_forged_index_is_one_error_line(world: World) -> None:
    [backup] = back_up(world, DAYS[:1])
    path = index_path(world, backup)
    genuine = path.read_bytes()

    # Damage: the same size, other bytes.  Refused before gpg sees them.
    path.write_bytes(bytes(len(genuine)))
    with repository(world) as repo, pytest.raises(FileIndexError, match="SHA-256 differs"):
        load_index(repo, row_of(repo, backup["id"]), world.key.secret_home)
    path.write_bytes(genuine[:-10])
    with repository(world) as repo, pytest.raises(FileIndexError, match="bytes stored"):
        load_index(repo, row_of(repo, backup["id"]), world.key.secret_home)

    # Forged, with a manifest to match: what gpg, zstd and the record reader make of it.
    assert "cannot be decoded" in forge(world, backup["id"], b"not gpg at all")
    out = io.BytesIO()
    writer = IndexWriter(out, Header(1, "2000-01-01", "ab" * 16, None))
    writer.write(Write("f", 0, 10, 1000))
    writer.end(2000)
    whole = out.getvalue()
    encrypted = gpg_encrypted(world, whole[:-20])
    assert "decodes to more than the 1 bytes" in forge(world, backup["id"], encrypted)
    said = forge(world, backup["id"], encrypted, len(whole) - 20)
    assert "the file index is damaged: its command 4" in said, said
    said = forge(world, backup["id"], gpg_encrypted(world, b"[]\n"), 3)
    assert "not a btrsendd file index" in said, said


def test_a_backup_without_an_index_says_what_it_is(world: World) -> None:
    [backup] = back_up(world, DAYS[:1])
    with repository(world) as repo:
        row = replace(row_of(repo, backup["id"]), file_index=None)
        with pytest.raises(FileIndexError, match=r"has no file index .*restore it as a whole$"):
            load_index(repo, row, world.key.secret_home)


def test_verify_reports_a_missing_index_as_its_own_finding(world: World) -> None:
    backups = back_up(world, DAYS[:2])
    index_path(world, backups[1]).unlink()
    found = world.run("verify", check=False)
    out = found.stdout.decode()
    assert found.returncode == 1, out
    [line] = [line for line in out.splitlines() if "file index" in line]
    assert backups[1]["id"] in line and "missing from storage" in line, line
    assert "still restores" in line, line
    assert "volume" not in line.replace("volumes", ""), line
    assert error_lines(found) == [] or all("file index" not in e for e in error_lines(found))


def test_expiry_and_forget_take_the_index_with_them(world: World) -> None:
    every_day = "backup_days = [" + ", ".join(str(d) for d in range(1, 32)) + "]"
    world.schedule = f"{every_day}\nmax_incrementals = 1\nchain_lifetime_days = 3"
    populate(world.source)
    for n, day in enumerate(["2000-01-01", "2000-01-02", "2000-01-03", "2000-01-05"]):
        if n:
            mutate(world.source, n)
        proc = world.run("backup", "--date", day)
    assert events(proc, "chain.expired")  # the chain of 01-01 and 01-02
    archive = world.work / "archive" / "data"
    kept = world.list()
    assert [b["date"] for b in kept] == ["2000-01-03", "2000-01-05"]
    assert sorted(p.name for p in archive.iterdir()) == [b["id"] for b in kept]
    assert all(index_path(world, b).exists() for b in kept)

    world.run("forget", "--source", "data", "--date", "2000-01-03", "--yes")
    assert world.list() == []
    assert [p for p in archive.rglob("*") if p.is_file()] == [], "forget left something"


def test_a_vault_stores_no_index_and_says_so(
    vault_server: VaultServer, make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path
) -> None:
    """Everything in a vault needs a retrieval job to be read: an index there would cost the
    retrieval it exists to avoid."""
    name = vault_server.new_vault()
    w = make_world(make_btrfs("src"), tmp_path, gpg_key, vault_server.storage_section(name))
    populate(w.source)
    proc = w.run("backup", "--date", "2000-01-01")
    [event] = events(proc, "index.skipped")
    assert "no class readable without a retrieval" in event["reason"], event
    [backup] = w.list()
    assert backup["state"] == "complete"
    with repository(w) as repo:
        assert row_of(repo, backup["id"]).file_index is None
        assert not [o.key for o in repo.storage.list("") if "file-index" in o.key]

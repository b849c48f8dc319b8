"""The catalog: states, transactions, schema versions and damaged files."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from btrsendd.catalog import Catalog
from btrsendd.catalog_schema import SCHEMA_VERSION
from btrsendd.errors import OperationalError
from btrsendd.model import DeferredDeletion, FileIndexRef, StreamIdentity, Volume


def begin(cat: Catalog, bid: str, day: str, parent: str | None = None) -> None:
    cat.begin_backup(
        id=bid,
        source="home",
        day=date.fromisoformat(day),
        kind="full" if parent is None else "incremental",
        parent_id=parent,
        chain=bid if parent is None else "c1",
        snapshot=day,
        snapshot_uuid="ab" * 16,
        parent_uuid=None,
        compression="zstd",
        recipients=["FPR1", "FPR2"],
        storage_class="DEEP_ARCHIVE",
    )


def vol(i: int) -> Volume:
    return Volume(i, f"vol-{i:05d}.btrfs.zst.gpg", i * 10, 10, "r" * 64, 7, "s" * 64, f"sha256:{i}")


def test_life_of_a_backup(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "state") as cat:
        begin(cat, "c1", "2000-01-01")
        assert cat.backups("home") == []  # uploading backups do not count
        cat.add_volume("c1", vol(0))
        cat.add_volume("c1", vol(1))
        cat.complete_backup("c1", "2000-01-01T00:10:00+00:00")
        begin(cat, "i1", "2000-01-07", parent="c1")
        cat.add_volume("i1", vol(0))
        cat.complete_backup("i1", "2000-01-07T00:10:00+00:00")
        full, inc = cat.backups("home")
        assert (full.raw_bytes, full.stored_bytes, full.volume_count) == (20, 14, 2)
        assert (inc.parent_id, inc.parent_date, inc.chain) == ("c1", date(2000, 1, 1), "c1")
        assert full.recipients == ("FPR1", "FPR2")
        cat.mark_expiring(["c1", "i1"])
        assert [r.state for r in cat.backups(states=("expiring",))] == ["expiring"] * 2
        cat.delete_backups(["i1", "c1"])
        assert cat.is_empty() and cat.volumes("c1") == []


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        with pytest.raises(sqlite3.IntegrityError):
            cat.add_volume("c1", vol(0))
            cat.add_volume("c1", vol(0))  # duplicate: this transaction rolls back alone
        assert cat.backups(states=("uploading",))[0].raw_bytes == 10


def test_one_backup_per_source_and_day(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        with pytest.raises(sqlite3.IntegrityError):
            begin(cat, "c2", "2000-01-01")


def test_catalog_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    Catalog.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(OperationalError, match="newer btrsendd"):
        Catalog.open(tmp_path)


#: Version 1 of the volumes table, before ``stored_checksum``.
_VOLUMES_V1 = """CREATE TABLE volumes (
    backup_id TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, name TEXT NOT NULL, raw_offset INTEGER NOT NULL,
    raw_length INTEGER NOT NULL, raw_sha256 TEXT NOT NULL, stored_size INTEGER NOT NULL,
    stored_sha256 TEXT NOT NULL, PRIMARY KEY (backup_id, idx))"""

#: What schema 5 added: each backup's file index.
_DOWN_TO_V4 = "".join(
    f"ALTER TABLE backups DROP COLUMN index_{c};"
    for c in ("name", "stored_size", "stored_sha256", "raw_size", "version")
)

#: What schema 4 added: object versions, locks and deferred deletions.
_DOWN_TO_V3 = (
    _DOWN_TO_V4
    + """DROP TABLE deferred_deletions; DROP TABLE stray_versions;
    ALTER TABLE volumes DROP COLUMN version;
    ALTER TABLE backups DROP COLUMN manifest_version;
    ALTER TABLE backups DROP COLUMN locked_until;"""
)

#: What schema 3 added: each backup's stream identity, and restore's working directories.
_DOWN_TO_V2 = (
    _DOWN_TO_V3
    + """DROP TABLE restore_workdirs;
    ALTER TABLE backups DROP COLUMN stream_version; ALTER TABLE backups DROP COLUMN stream_name;
    ALTER TABLE backups DROP COLUMN stream_uuid; ALTER TABLE backups DROP COLUMN stream_ctransid;
    ALTER TABLE backups DROP COLUMN stream_parent_uuid;
    ALTER TABLE backups DROP COLUMN stream_parent_ctransid;"""
)


def test_catalog_of_version_1_is_upgraded_in_place(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.executescript(
        f"""{_DOWN_TO_V2} DROP TABLE volumes; {_VOLUMES_V1};
        INSERT INTO volumes VALUES ('c1', 0, 'vol-00000', 0, 10, 'r', 7, 's');
        PRAGMA user_version = 1;"""
    )
    db.close()
    with Catalog.open(tmp_path) as cat:
        assert cat.volumes("c1") == [Volume(0, "vol-00000", 0, 10, "r", 7, "s", None)]
        cat.add_volume("c1", vol(1))
        assert cat.volumes("c1")[1] == vol(1)
    db = sqlite3.connect(tmp_path / "catalog.db")
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_catalog_of_version_2_keeps_its_backups_unchecked(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        cat.complete_backup("c1", "2000-01-01T00:10:00+00:00")
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.executescript(f"{_DOWN_TO_V2} PRAGMA user_version = 2;")
    db.close()
    stream = StreamIdentity(2, "2000-01-07", "ab" * 16, 7, "cd" * 16, 5)
    with Catalog.open(tmp_path) as cat:
        [old] = cat.backups("home")
        assert old.stream is None  # stored before streams were checked
        begin(cat, "i1", "2000-01-07", parent="c1")
        cat.set_stream("i1", stream)
        cat.complete_backup("i1", "2000-01-07T00:10:00+00:00")
        assert cat.backups("home")[1].stream == stream
        cat.record_workdir("/t/.btrsendd-restore-x", 5, 7)
        assert cat.workdir("/t/.btrsendd-restore-x") == (5, 7)


def test_catalog_of_version_3_reads_its_backups_as_unversioned_and_unlocked(
    tmp_path: Path,
) -> None:
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        cat.add_volume("c1", vol(0))
        cat.complete_backup("c1", "2000-01-01T00:10:00+00:00")
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.executescript(f"{_DOWN_TO_V3} PRAGMA user_version = 3;")
    db.close()
    with Catalog.open(tmp_path) as cat:
        [old] = cat.backups("home")
        assert (old.manifest_version, old.locked_until) == (None, None)
        assert cat.volumes("c1") == [vol(0)]
        assert cat.deferred_deletions() == []


def test_catalog_of_version_4_reads_its_backups_as_unindexed(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        cat.complete_backup("c1", "2000-01-01T00:10:00+00:00")
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.executescript(f"{_DOWN_TO_V4} PRAGMA user_version = 4;")
    db.close()
    ref = FileIndexRef("file-index.zst", 50, "a" * 64, 300, "v9")
    with Catalog.open(tmp_path) as cat:
        [old] = cat.backups("home")
        assert old.file_index is None  # stored before btrsendd kept file indexes
        begin(cat, "i1", "2000-01-07", parent="c1")
        cat.set_file_index("i1", ref)
        cat.complete_backup("i1", "2000-01-07T00:10:00+00:00")
        assert cat.backups("home")[1].file_index == ref


def test_a_rebuilt_row_keeps_its_file_index(tmp_path: Path) -> None:
    ref = FileIndexRef("file-index.gz.gpg", 50, "b" * 64, 300, None)
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        cat.set_file_index("c1", ref)
        cat.complete_backup("c1", "2000-01-01T00:10:00+00:00")
        [row] = cat.backups("home")
    with Catalog.open(tmp_path / "other") as fresh:
        fresh.insert_complete(row, [])
        assert fresh.backups("home") == [row]


def test_locked_backups_leave_the_catalog_with_their_versions_deferred(tmp_path: Path) -> None:
    until = datetime(2027, 1, 1, tzinfo=UTC)
    with Catalog.open(tmp_path) as cat:
        begin(cat, "c1", "2000-01-01")
        cat.add_volume("c1", replace(vol(0), version="v0"))
        cat.complete_backup("c1", "2000-01-01T00:10:00+00:00", "m0")
        cat.set_locked_until(["c1"], until)
        [row] = cat.backups("home")
        assert (row.manifest_version, row.locked_until) == ("m0", until)
        assert cat.volumes("c1")[0].version == "v0"
        deferred = [
            DeferredDeletion("c1", "home", "home/c1/manifest.json", "m0", 9, until),
            DeferredDeletion("c1", "home", "home/c1/vol-00000", "v0", 7, until),
            DeferredDeletion("c1", "home", "home/c1/vol-00000", "x", 0, until, True),
        ]
        cat.defer_deletion(["c1"], deferred)
        assert cat.backups("home", states=("complete", "expiring", "uploading")) == []
        assert cat.deferred_deletions("home") == deferred
        assert cat.deferred_deletions("other") == []
        later = datetime(2027, 2, 1, tzinfo=UTC)
        cat.set_deferred_until("c1", later)
        assert {d.until for d in cat.deferred_deletions()} == {later}
        cat.drop_deferred("c1", [("home/c1/vol-00000", "x")])
        assert [d.version for d in cat.deferred_deletions()] == ["m0", "v0"]
        cat.drop_deferred("c1", [("home/c1/manifest.json", "m0"), ("home/c1/vol-00000", "v0")])
        assert cat.deferred_deletions() == []


def test_corrupt_catalog_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "catalog.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OperationalError, match="catalog rebuild"):
        Catalog.open(tmp_path)

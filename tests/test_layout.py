"""The storage format: every key, built and parsed in one place."""

from __future__ import annotations

from datetime import date

from btrsendd.layout import Layout, Placed, new_backup_id, object_key, volume_name
from btrsendd.model import Backup
from btrsendd.names import BACKUP_ID_RE, VOLUME_RE

BACKUP = Backup(
    id="2026-11-26-full-1b4684",
    source="home",
    date=date(2026, 11, 26),
    kind="full",
    parent_id=None,
    parent_date=None,
    chain="2026-11-26-full-1b4684",
    state="complete",
    snapshot="2026-11-26",
    snapshot_uuid=None,
    parent_uuid=None,
    compression="zstd",
    recipients=("FPR",),
    storage_class="DEEP_ARCHIVE",
    raw_bytes=1,
    stored_bytes=1,
    volume_count=1,
    created_at="2026-11-26T00:00:00+00:00",
    completed_at=None,
)


def test_object_key_skips_an_empty_prefix() -> None:
    assert object_key("host1", "home", "b1", "manifest.json") == "host1/home/b1/manifest.json"
    assert object_key("", "home", "b1") == "home/b1"
    assert object_key("a/b", "c") == "a/b/c"


def test_keys_of_a_backup() -> None:
    layout = Layout("host1")
    assert layout.root() == "host1/"
    assert layout.source_root("home") == "host1/home/"
    assert layout.manifest_key(BACKUP) == "host1/home/2026-11-26-full-1b4684/manifest.json"
    assert layout.key(BACKUP, "vol-00000.btrfs.zst.gpg") == (
        "host1/home/2026-11-26-full-1b4684/vol-00000.btrfs.zst.gpg"
    )
    assert Layout("").backup_dir_of(BACKUP) == "home/2026-11-26-full-1b4684/"


def test_names_it_makes_are_the_names_it_accepts() -> None:
    for kind in ("full", "incremental"):
        made = new_backup_id(date(2026, 11, 26), kind)
        assert BACKUP_ID_RE.fullmatch(made) and made.startswith("2026-11-26-")
    assert volume_name(3, "btrfs.zst.gpg") == "vol-00003.btrfs.zst.gpg"
    assert VOLUME_RE.fullmatch(volume_name(12345, "btrfs.gz"))
    longest = Layout("host1").longest_key("home")
    assert len(longest) >= len(Layout("host1").key(BACKUP, volume_name(0, "btrfs.gz.gpg")))


def test_keys_read_back_are_placed_or_refused() -> None:
    layout = Layout("host1")
    key = layout.manifest_key(BACKUP)
    assert layout.place(key) == Placed("home", BACKUP.id, "manifest.json")
    assert layout.place("host1/home/stray.bin") == Placed("home", None, "stray.bin")
    for hostile in ("other/home/x", "host1/../x/y/z", "host1/home/not-an-id/x", "host1/a b/c/d"):
        assert layout.place(hostile) is None, hostile

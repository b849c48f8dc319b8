"""Restore on real btrfs, gpg and storage servers, through the real command line.

Round trips over ten days of changing data, Glacier semantics on moto (nothing is readable
before it is thawed, a thaw is requested once however often restore runs), and every way a
restore can fail: damaged and missing volumes, a wrong, missing or locked private key, a send
stream btrfs refuses, a bad target.  A failed restore must name the backup and volume and
leave nothing in the target.  Unit tests at the end cover thawing and prices without btrfs.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import btrfsutil
import pytest

from btrsendd.catalog import Catalog
from btrsendd.config import RestoreConfig, load_config
from btrsendd.errors import NotThawedError, UsageError
from btrsendd.model import Backup, Volume
from btrsendd.pricing import GIB, Fetch, Prices
from btrsendd.restore import (
    RESTORE_DAYS,
    Located,
    survey,
    thaw,
)
from btrsendd.storage.base import ThawState, Tier
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support import sendstreams as ss
from tests.support.backups import (
    TEN_DAYS,
    OnBackend,
    assert_failed_cleanly,
    back_up,
    backend_world,
    error_lines,
    events,
    stored_volumes,
    try_restore,
    world_storage,
)
from tests.support.trees import assert_same_tree

# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_ten_days_restore_exactly(
    on_backend: OnBackend,
    backend: str,
    make_btrfs: MakeBtrfs,
) -> None:
    w = on_backend(backend)
    backups = back_up(w, TEN_DAYS)
    kinds = ["full"] + ["incremental"] * 3
    assert [b["kind"] for b in backups] == kinds + kinds + kinds[:2]
    assert w.run("verify").stdout.decode().endswith("verify: OK\n")

    if backend == "moto":
        # Glacier semantics: a DEEP_ARCHIVE volume cannot be read before it is thawed.
        [first, *_] = stored_volumes(w, backups[-1])
        with pytest.raises(NotThawedError), world_storage(w).open_read(first):
            pass

    # The first day (a full backup), a date between backups (the newest before it, the third
    # member of its chain) and the last day.
    for asked, expected in [
        (TEN_DAYS[0], TEN_DAYS[0]),
        (date(2000, 2, 20), TEN_DAYS[6]),
        (TEN_DAYS[-1], TEN_DAYS[-1]),
    ]:
        fs = make_btrfs(f"dst-{expected}")
        target = fs / "restore"
        target.mkdir()
        proc = try_restore(w, asked, target, "--tier", "Bulk", "--writable", str(fs / "rw"))
        assert proc.returncode == 0, proc.stderr.decode()
        restored = target / expected.isoformat()
        out = proc.stdout.decode()
        assert f"restored data {expected} to {restored}" in out
        assert ("to request" in out) == (backend == "moto"), out
        assert_same_tree(w.snapshots / expected.isoformat(), restored)
        # Only the day itself is left in the target: no chain members, no working directory.
        assert list(target.iterdir()) == [restored]
        assert btrfsutil.get_subvolume_read_only(restored)
        assert_same_tree(restored, fs / "rw")
        (fs / "rw" / "written after restore").write_text("writable\n")

    with Catalog.open(w.work / "state") as catalog:
        assert catalog.restore_requests() == {}, "finished restores wait for nothing"


def test_restore_requested_once_resumes_after_no_wait(
    on_backend: OnBackend,
    make_btrfs: MakeBtrfs,
    moto_server: S3Server,
) -> None:
    w = on_backend("moto")
    backups = back_up(w, TEN_DAYS[:3])
    chain_keys = {k for b in backups for k in stored_volumes(w, b)}
    target = make_btrfs("dst")

    first = try_restore(w, TEN_DAYS[2], target, "--no-wait", "--tier", "Bulk")
    assert first.returncode == 0, first.stderr.decode()
    assert "run the same command again later" in first.stdout.decode()
    assert {e["key"] for e in events(first, "restore.requested")} == chain_keys
    assert list(target.iterdir()) == []
    with Catalog.open(w.work / "state") as catalog:
        recorded = catalog.restore_requests()
    assert set(recorded) == chain_keys
    assert {r.tier for r in recorded.values()} == {"Bulk"}

    # moto stamps every restore request with a new expiry (to the second): unchanged stamps
    # after the second run prove no request reached the server.
    client = moto_server.client()
    bucket = load_config(w.config).storage.bucket
    assert bucket is not None

    def stamps() -> dict[str, str]:
        return {k: client.head_object(Bucket=bucket, Key=k)["Restore"] for k in chain_keys}

    before = stamps()
    time.sleep(1.1)
    second = try_restore(w, TEN_DAYS[2], target, "--tier", "Bulk")
    assert second.returncode == 0, second.stderr.decode()
    assert events(second, "restore.requested") == []
    assert stamps() == before
    assert_same_tree(w.snapshots / TEN_DAYS[2].isoformat(), target / TEN_DAYS[2].isoformat())
    with Catalog.open(w.work / "state") as catalog:
        assert catalog.restore_requests() == {}


# -- failures ------------------------------------------------------------------------------


def test_damaged_and_missing_volumes_fail_cleanly(
    on_backend: OnBackend, make_btrfs: MakeBtrfs, tmp_path: Path
) -> None:
    w = on_backend("local")
    # Two chains: one with a flipped byte in its incremental, one missing its incremental's
    # volume.
    _, flipped, _, lost = back_up(w, TEN_DAYS[:4], max_incrementals=1)
    archive = w.work / "archive"
    flipped_key, *_ = stored_volumes(w, flipped)
    data = bytearray((archive / flipped_key).read_bytes())
    data[len(data) // 2] ^= 0x01
    (archive / flipped_key).write_bytes(bytes(data))
    lost_key, *_ = stored_volumes(w, lost)
    (archive / lost_key).unlink()

    checked = w.run("verify", check=False)
    assert checked.returncode == 1
    report = checked.stdout.decode()
    assert f"backup {flipped['id']} (2000-01-07), volume 0 ({flipped_key}): its SHA-256" in report
    assert f"backup {lost['id']} (2000-01-21), volume 0 ({lost_key}): missing" in report

    target = make_btrfs("dst")
    # The damage shows only while decoding: the full backup is received first, then dropped.
    line = assert_failed_cleanly(
        try_restore(w, TEN_DAYS[1], target), target, flipped["id"], "volume 0", "damaged"
    )
    assert "nothing was left in" in line
    # A missing volume is found before anything is requested or received.
    line = assert_failed_cleanly(
        try_restore(w, TEN_DAYS[3], target), target, lost["id"], "volume 0", "missing"
    )
    assert "nothing was requested" in line

    # The undamaged day of the second chain still restores.
    assert_same_tree(w.snapshots / "2000-01-14", w.restore(TEN_DAYS[2], target))
    assert [p.name for p in target.iterdir()] == ["2000-01-14"]

    # Targets that cannot take the day are refused before anything is spent.
    plain = tmp_path / "not-btrfs"
    plain.mkdir()
    for bad, message in [
        (target, "already contains a subvolume named 2000-01-14"),
        (plain, "is not on a btrfs filesystem"),
        (target / "missing", "is not a directory"),
    ]:
        proc = try_restore(w, TEN_DAYS[2], bad)
        assert proc.returncode == 2
        [line] = error_lines(proc)
        assert message in line


@contextlib.contextmanager
def passphrase_key(workdir: Path) -> Iterator[GpgKey]:
    """A key pair whose private key has a passphrase, which gpg in batch mode cannot ask for."""
    secret, public = workdir / "secret", workdir / "public"
    for home in (secret, public):
        home.mkdir(mode=0o700, parents=True)

    def gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
        argv = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", *args]
        return subprocess.run(argv, input=stdin, check=True, capture_output=True).stdout

    try:
        uid = "locked <locked@example.invalid>"
        gpg(secret, "--passphrase", "s3cret", "--quick-gen-key", uid, "future-default")
        listing = gpg(secret, "--with-colons", "--list-keys").decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        gpg(public, "--import", stdin=gpg(secret, "--export", fpr))
        yield GpgKey(secret, public, fpr)
    finally:
        for home in (secret, public):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_wrong_missing_or_locked_private_key(
    request: pytest.FixtureRequest,
    make_btrfs: MakeBtrfs,
    other_gpg_key: GpgKey,
    tmp_path: Path,
) -> None:
    with passphrase_key(tmp_path / "gpg") as locked:
        w = backend_world("local", request, make_btrfs, locked, tmp_path)
        full, _ = back_up(w, TEN_DAYS[:2])
        target = make_btrfs("dst")
        empty = tmp_path / "empty-keyring"
        empty.mkdir(mode=0o700)

        # Without the private key nothing is requested or received: a usage error.
        for home in (other_gpg_key.secret_home, empty):
            proc = try_restore(w, TEN_DAYS[1], target, home=home)
            assert proc.returncode == 2, proc.stderr.decode()
            [line] = error_lines(proc)
            assert f"{home} holds no private key for {locked.fingerprint}" in line
            assert list(target.iterdir()) == []

        # The key is there but locked: gpg fails while the first volume is decoded.
        line = assert_failed_cleanly(
            try_restore(w, TEN_DAYS[1], target, home=locked.secret_home),
            target,
            f"backup {full['id']} (2000-01-01), volume 0",
            "gpg failed",
            "unlock a passphrase-protected key",
        )
        assert "nothing was left in" in line


def test_send_stream_btrfs_refuses_fails_cleanly(
    on_backend: OnBackend, make_btrfs: MakeBtrfs
) -> None:
    w = on_backend("local")
    # A well-formed stream that writes to a file it never created: only btrfs rejects it.
    stream = ss.header() + ss.subvol() + ss.write(b"missing", 0, b"x" * 60_000) + ss.end()
    proc = w.run("backup-stdin", "--source", "data", "--date", "2000-01-01", input=stream)
    assert proc.stdout == b"c\n"
    [backup] = w.list()
    target = make_btrfs("dst")
    assert_failed_cleanly(
        try_restore(w, date(2000, 1, 1), target),
        target,
        f"backup {backup['id']} (2000-01-01)",
        "btrfs receive failed",
    )


# -- thawing and prices, without btrfs -----------------------------------------------------


class ColdStorage:
    """Thaw states as S3 reports them, with restores that take ``polls`` checks to finish."""

    def __init__(self, states: dict[str, ThawState], polls: int = 2) -> None:
        self.states = states
        self.polls = polls
        self.checks: dict[str, int] = {}
        self.requests: list[tuple[str, Tier]] = []

    def thaw_state(self, key: str, version: str | None = None) -> ThawState:
        self.checks[key] = self.checks.get(key, 0) + 1
        if self.states[key] == "pending" and self.checks[key] > self.polls:
            self.states[key] = "readable"
        return self.states[key]

    def request_thaw(self, key: str, tier: Tier, days: int, version: str | None = None) -> None:
        assert days == RESTORE_DAYS
        self.requests.append((key, tier))
        self.states[key] = "pending"
        self.checks[key] = 0

    def thaw_lifetime(self, days: int) -> timedelta:
        return timedelta(days=days)  # S3 keeps a thawed copy the days asked for


def catalog_with_backup(tmp_path: Path) -> tuple[Catalog, Backup, Volume]:
    row = Backup(
        id="2000-01-01-full-abcdef",
        source="data",
        date=date(2000, 1, 1),
        kind="full",
        parent_id=None,
        parent_date=None,
        chain="2000-01-01-full-abcdef",
        state="complete",
        snapshot="2000-01-01",
        snapshot_uuid=None,
        parent_uuid=None,
        compression="zstd",
        recipients=(),
        storage_class="DEEP_ARCHIVE",
        raw_bytes=10,
        stored_bytes=10,
        volume_count=1,
        created_at="2000-01-01T00:00:00+00:00",
        completed_at="2000-01-01T00:10:00+00:00",
    )
    volume = Volume(0, "vol-00000.btrfs.zst", 0, 10, "r" * 64, 10, "s" * 64)
    catalog = Catalog.open(tmp_path / "state")
    catalog.insert_complete(row, [volume])
    return catalog, row, volume


def test_thaw_requests_each_object_once_and_waits(tmp_path: Path) -> None:
    catalog, row, volume = catalog_with_backup(tmp_path)
    volumes = [Located(row, replace(volume, index=i), f"k{i}") for i in range(3)]
    storage: Any = ColdStorage({"k0": "archived", "k1": "pending", "k2": "readable"})
    with catalog:
        start = survey(storage, catalog, volumes)
        assert [[v.key for v in group] for group in (start.to_request, start.pending)] == [
            ["k0"],
            ["k1"],
        ]
        assert not thaw(storage, catalog, start, tier="Bulk", wait=False, max_poll=0.01)
        assert storage.requests == [("k0", "Bulk")]
        assert set(catalog.restore_requests()) == {"k0"}

        # S3 may not show a fresh request yet: recorded and young, it is waited for, not
        # requested again.
        storage.states["k0"] = "archived"
        again = survey(storage, catalog, volumes)
        assert [v.key for v in again.pending] == ["k0", "k1"] and not again.to_request
        assert "k0" in again.requests
        storage.states["k0"] = "pending"
        assert thaw(storage, catalog, again, tier="Bulk", wait=True, max_poll=0.01)
        assert storage.requests == [("k0", "Bulk")]

        # A thawed copy expires after RESTORE_DAYS: an older request is made again.
        storage.states["k0"] = "archived"
        later = datetime.now(UTC) + timedelta(days=RESTORE_DAYS, minutes=1)
        assert [v.key for v in survey(storage, catalog, volumes, now=later).to_request] == ["k0"]


def test_prices_with_overrides() -> None:
    prices = Prices.from_config(
        RestoreConfig.model_validate(
            {"transfer_out_per_gb": 0, "prices": {"DEEP_ARCHIVE": {"Bulk": {"per_gb": 0.01}}}}
        )
    )
    thawed = [Fetch("DEEP_ARCHIVE", 10 * GIB, needs_thaw=True)] * 2
    # 20 GiB at the overridden 0.01/GB plus two requests at the built-in 0.025 per 1,000.
    assert prices.estimate(thawed, "Bulk") == pytest.approx(0.2 + 2 * 0.025 / 1000)
    assert prices.waits(thawed, "Standard") == ["within 12 hours"]
    assert prices.tiers(["DEEP_ARCHIVE", "GLACIER"]) == ["Standard", "Bulk"]
    with pytest.raises(UsageError, match="use --tier Standard or --tier Bulk"):
        prices.estimate(thawed, "Expedited")
    # Already thawed, or instantly readable: download and read fees only.
    defaults = Prices.from_config(RestoreConfig())
    assert defaults.estimate([Fetch("DEEP_ARCHIVE", GIB, needs_thaw=False)], "Bulk") == 0.09
    assert defaults.estimate([Fetch("GLACIER_IR", GIB, needs_thaw=False)], "Bulk") == 0.12
    assert defaults.estimate([Fetch("local", GIB, needs_thaw=False)], "Bulk") == 0

"""``catalog rebuild``: a new machine gets every restorable backup back from the manifests."""

from __future__ import annotations

import shutil

import pytest

from tests.backed_up import TEN_DAYS, OnBackend, back_up, error_lines, stored_volumes
from tests.fixtures.btrfs import MakeBtrfs
from tests.trees import assert_same_tree


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_disaster_recovery(
    on_backend: OnBackend,
    backend: str,
    make_btrfs: MakeBtrfs,
) -> None:
    w = on_backend(backend)
    before = back_up(w, TEN_DAYS[:4])

    shutil.rmtree(w.work / "state")  # the machine is gone; config, bucket and key remain
    assert w.list() == []
    rebuilt = w.run("catalog", "rebuild")
    assert "4 backup(s) (data: 4)" in rebuilt.stdout.decode()
    assert w.list() == before
    # The rebuilt catalog holds what the old one did, S3 checksums included.
    checked = w.run("verify").stdout.decode()
    assert checked.endswith("verify: OK\n")
    if backend != "local":
        assert "checked by size and the storage's checksum\n" in checked

    last = TEN_DAYS[3]
    assert_same_tree(w.snapshots / last.isoformat(), w.restore(last, make_btrfs("dst")))

    refused = w.run("catalog", "rebuild", check=False)
    assert refused.returncode == 2
    [line] = error_lines(refused)
    assert "not empty (4 backup(s)); pass --force" in line
    w.run("catalog", "rebuild", "--force")
    assert w.list() == before


def test_rebuild_adopts_only_restorable_backups(on_backend: OnBackend) -> None:
    w = on_backend("local")
    full, lost, orphaned = back_up(w, TEN_DAYS[:3])
    archive = w.work / "archive"
    (archive / stored_volumes(w, lost)[0]).unlink()
    stray = archive / "data" / "2000-02-01-full-000000"
    stray.mkdir()
    (stray / "manifest.json").write_text("{}")

    proc = w.run("catalog", "rebuild", "--force")
    warnings = [line for line in error_lines(proc) if line.startswith("btrsendd: warning: ")]
    assert sorted(line.removeprefix("btrsendd: warning: ") for line in warnings) == [
        f"skipped backup {lost['id']} (data 2000-01-07): volume 0 missing",
        f"skipped backup {orphaned['id']} (data 2000-01-14): its parent {lost['id']} is "
        "missing or was skipped, so it cannot be restored",
        "skipped data/2000-02-01-full-000000/manifest.json: "
        "data/2000-02-01-full-000000/manifest.json: unreadable manifest (not a btrsendd manifest)",
    ]
    assert "1 backup(s) (data: 1); 3 skipped" in proc.stdout.decode()
    assert [b["id"] for b in w.list()] == [full["id"]]

"""``verify``: volumes, manifests and orphans checked for free; ``--deep`` restores and compares.

The damaged and missing volume cases are in ``test_restore.py``, next to the restores they
make fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import btrfsutil
import pytest

from btrsendd.config import load_config
from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.s3servers import S3Server
from tests.support.backups import (
    TEN_DAYS,
    OnBackend,
    assert_failed_cleanly,
    back_up,
    error_lines,
    stored_volumes,
    try_restore,
)
from tests.support.trees import mutate


def test_orphans_listed_and_cleaned(on_backend: OnBackend) -> None:
    w = on_backend("local")
    full, _ = back_up(w, TEN_DAYS[:2])
    data = w.work / "archive" / "data"
    orphans = {
        "data/stray.bin": b"stray",
        "data/1999-12-31-full-ffffff/vol-00000.btrfs.zst.gpg": b"never completed",
        f"data/{full['id']}/vol-00099.btrfs.zst.gpg": b"not in the manifest",
    }
    for key, content in orphans.items():
        path = data.parent / key
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)

    proc = w.run("verify", check=False)
    assert proc.returncode == 1
    lines = proc.stdout.decode().splitlines()
    assert sorted(line.split(" (")[0] for line in lines if "ORPHAN" in line) == sorted(
        f"data: ORPHAN: {key}" for key in orphans
    )
    assert (
        "verify: 0 problem(s), 3 orphan(s); `btrsendd verify --clean` deletes the orphans" in lines
    )

    cleaned = w.run("verify", "--clean")
    assert "data: deleted 3 orphan(s)" in cleaned.stdout.decode()
    assert not any((data.parent / key).exists() for key in orphans)
    assert not (data / "1999-12-31-full-ffffff").exists()
    assert w.run("verify").stdout.decode().endswith("verify: OK\n")


def test_manifests_checked_against_the_catalog(on_backend: OnBackend) -> None:
    w = on_backend("local")
    full, inc = back_up(w, TEN_DAYS[:2])
    manifest = w.work / "archive" / "data" / inc["id"] / "manifest.json"
    original = manifest.read_bytes()
    doc = json.loads(original)
    doc["volumes"][0]["raw_sha256"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    proc = w.run("verify", check=False)
    assert proc.returncode == 1
    assert (
        f"data: PROBLEM: backup {inc['id']} (2000-01-07): its manifest data/{inc['id']}/"
        "manifest.json disagrees with the catalog on volumes"
    ) in proc.stdout.decode()
    manifest.write_bytes(original)

    # A catalog that lost backups (a new one, after the state directory was lost): they are
    # reported, and --clean never deletes a backup that has a manifest.
    shutil.rmtree(w.work / "state")
    mutate(w.source, 2)
    w.run("backup", "--date", "2000-02-01")
    proc = w.run("verify", "--clean", check=False)
    assert proc.returncode == 1
    out = proc.stdout.decode()
    for backup in (full, inc):
        assert (
            f"backup {backup['id']} ({backup['date']}) is in storage but not in the catalog; "
            "`btrsendd catalog rebuild --force` adopts it"
        ) in out
    assert "ORPHAN" not in out and "deleted" not in out
    w.run("catalog", "rebuild", "--force")
    assert w.run("verify").stdout.decode().endswith("verify: OK\n")


def test_clean_aborts_unfinished_uploads_on_s3(
    on_backend: OnBackend,
    moto_server: S3Server,
) -> None:
    w = on_backend("moto")
    back_up(w, TEN_DAYS[:1])
    client = moto_server.client()
    bucket = load_config(w.config).storage.bucket
    assert bucket is not None
    key = "host1/data/2000-01-07-inc-abcdef/vol-00000.btrfs.zst.gpg"
    client.create_multipart_upload(Bucket=bucket, Key=key)
    proc = w.run("verify", check=False)
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert "checked by size and the storage's checksum\n" in out
    assert f"data: ORPHAN: {key} (unfinished upload)\n" in out
    assert "verify: 0 problem(s), 1 orphan(s)" in out
    cleaned = w.run("verify", "--clean")
    assert "data: removed 1 unfinished upload(s)" in cleaned.stdout.decode()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert w.run("verify").stdout.decode().endswith("verify: OK\n")


def test_orphans_with_keys_btrsendd_never_writes(
    on_backend: OnBackend, request: pytest.FixtureRequest
) -> None:
    # Someone with write access to the bucket puts objects whose keys have empty segments
    # or a newline: reported on one line each, never a crash, and --clean leaves them to the
    # bucket's owner instead of handing them to the storage as if btrsendd had made them.
    w = on_backend("moto")  # SeaweedFS folds "//" into "/"; AWS and moto keep keys as given
    back_up(w, TEN_DAYS[:1])
    server: S3Server = request.getfixturevalue("moto_server")
    bucket = load_config(w.config).storage.bucket
    odd = ["host1/data//x", "host1/data/../y", "host1/data/z\x1b[2K PROBLEM: forged"]
    for key in odd:
        server.client().put_object(Bucket=bucket, Key=key, Body=b"junk")
    proc = w.run("verify", check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.decode()
    assert "data: ORPHAN: host1/data//x (4 B)" in out
    assert "data: ORPHAN: 'host1/data/z\\x1b[2K PROBLEM: forged' (4 B)" in out
    cleaned = w.run("verify", "--clean", check=False)
    assert "left 3 orphan(s) whose keys btrsendd never writes" in cleaned.stdout.decode()
    assert error_lines(cleaned) == []


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"])
def test_changed_volume_found_by_the_storage_checksum(
    on_backend: OnBackend,
    backend: str,
    request: pytest.FixtureRequest,
    make_btrfs: MakeBtrfs,
) -> None:
    """On S3 a shallow verify reads no volume (a paid retrieval), yet finds a flipped byte."""
    w = on_backend(backend)
    _, inc = back_up(w, TEN_DAYS[:2])
    key, *_ = stored_volumes(w, inc)
    server: S3Server = request.getfixturevalue(f"{backend}_server")
    client = server.client()
    bucket = load_config(w.config).storage.bucket
    assert bucket is not None
    storage_class = client.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD")
    if storage_class != "STANDARD":  # moto keeps Glacier semantics: thaw it to read it
        client.restore_object(
            Bucket=bucket,
            Key=key,
            RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Expedited"}},
        )
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data), StorageClass=storage_class)

    proc = w.run("verify", check=False)
    assert proc.returncode == 1
    assert (
        f"backup {inc['id']} (2000-01-07), volume 0 ({key}): the storage's checksum of it is wrong"
    ) in proc.stdout.decode()
    assert "verify: 1 problem(s), 0 orphan(s)" in proc.stdout.decode()
    # Restore makes the same free check before it spends anything.
    target = make_btrfs("dst")
    line = assert_failed_cleanly(
        try_restore(w, TEN_DAYS[1], target), target, inc["id"], "volume 0", "checksum"
    )
    assert "nothing was requested" in line


def test_deep_restores_the_newest_day_and_compares(on_backend: OnBackend) -> None:
    w = on_backend("local")
    newest = back_up(w, TEN_DAYS[:3])[-1]
    state = w.work / "state"

    proc = w.run("verify", "--deep", "--gnupg-home", str(w.key.secret_home))
    assert (
        f"data: restored 2000-01-14 ({newest['id']}) equals the local snapshot "
        f"{w.snapshots / '2000-01-14'}"
    ) in proc.stdout.decode()
    assert "warning: verify --deep restores data 2000-01-14" in proc.stderr.decode()
    assert str(state) not in Path("/proc/self/mounts").read_text()
    assert not list(state.glob("verify-scratch-*"))

    # The local snapshot changed behind btrsendd's back: the restored day no longer matches.
    snapshot = w.snapshots / "2000-01-14"
    btrfsutil.set_subvolume_read_only(snapshot, False)
    (snapshot / "docs" / "readme.txt").write_text("changed\n")
    btrfsutil.set_subvolume_read_only(snapshot, True)
    proc = w.run("verify", "--deep", "--gnupg-home", str(w.key.secret_home), check=False)
    assert proc.returncode == 1
    assert "differs from the local snapshot" in proc.stdout.decode()
    assert "differing 1 ('docs/readme.txt')" in proc.stdout.decode()
    assert not error_lines(proc)[1:], "only the cost warning goes to stderr"

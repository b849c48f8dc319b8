"""btrfs: send and receive, and the subvolume calls, on real filesystems (loop devices).

``btrfs send`` is also stood in for by small Python programs where a test needs it to fail in
a way real btrfs will not on request.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from btrsendd.errors import OperationalError, PipelineError
from btrsendd.pipeline import btrfs
from btrsendd.pipeline.btrfs import is_subvolume, run_send, same_filesystem, send_command
from btrsendd.pipeline.codec import decode_volume, encode_stream
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.pipeline.support import (
    MemoryStore,
    MiB,
    child_processes,
    codec_for,
    python_command,
    random_data,
)


def test_send_command() -> None:
    new, old = Path("/snaps/new"), Path("/snaps/old")
    assert send_command(new, None) == ["btrfs", "-q", "send", "/snaps/new"]
    assert send_command(new, old) == ["btrfs", "-q", "send", "-p", "/snaps/old", "/snaps/new"]


# --- real btrfs send and receive -------------------------------------------------------


def snapshot(source: Path, target: Path) -> Path:
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(source), str(target)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.mark.slow
def test_btrfs_send_to_receive(btrfs_fs: Path, make_btrfs: MakeBtrfs, gpg_key: GpgKey) -> None:
    """A full and an incremental backup, encoded, decoded and received on another filesystem."""
    live = make_subvolume(btrfs_fs / "live")
    big = random_data(3 * MiB, seed=7)
    (live / "big.bin").write_bytes(big)
    (live / "dir").mkdir()
    (live / "dir" / "notes.txt").write_text("hello\n" * 1000)
    snap1 = snapshot(live, btrfs_fs / "snap1")
    (live / "dir" / "notes.txt").write_text("changed\n")
    (live / "new.bin").write_bytes(random_data(MiB, seed=8))
    snap2 = snapshot(live, btrfs_fs / "snap2")
    dst = make_btrfs("dst")
    codec = codec_for("gzip", gpg_key)

    volume_counts = []
    for snap, parent in ((snap1, None), (snap2, snap1)):
        store = MemoryStore()
        progress: list[int] = []
        with run_send(send_command(snap, parent)) as raw:
            results = encode_stream(raw, codec, MiB, store, progress.append)
        assert progress[-1] == sum(v.raw_length for v in results)
        volume_counts.append(len(results))
        receive = subprocess.Popen(
            ["btrfs", "-q", "receive", str(dst)], stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert receive.stdin is not None and receive.stderr is not None
        with receive.stdin:
            for vol in results:
                stored = io.BytesIO(store.volumes[vol.index])
                decode_volume(stored, codec, receive.stdin, gnupg_home=gpg_key.secret_home)
        errors = receive.stderr.read()
        assert receive.wait() == 0, errors

    assert volume_counts[0] >= 4 and volume_counts[1] < volume_counts[0]
    assert (dst / "snap1" / "big.bin").read_bytes() == big
    assert (dst / "snap1" / "dir" / "notes.txt").read_text() == "hello\n" * 1000
    assert not (dst / "snap1" / "new.bin").exists()
    assert (dst / "snap2" / "big.bin").read_bytes() == big
    assert (dst / "snap2" / "dir" / "notes.txt").read_text() == "changed\n"
    assert (dst / "snap2" / "new.bin").read_bytes() == random_data(MiB, seed=8)
    assert child_processes() == []


# --- btrfs send failing --------------------------------------------------------------------


def test_send_of_missing_path_fails(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as info:
        with run_send(send_command(tmp_path / "nope", None)) as raw:
            encode_stream(raw, codec_for("zstd", None), MiB, MemoryStore())
    assert info.value.stage == "btrfs send"
    assert "nope" in info.value.detail
    assert child_processes() == []


def test_send_failing_midstream_stores_no_partial_volume() -> None:
    """Volumes before the failure are whole; the one it cut short is never stored."""
    cmd = python_command("import os, sys; os.write(1, bytes(3_000_000)); sys.exit('exploded')")
    store = MemoryStore()
    with pytest.raises(PipelineError) as info:
        with run_send(cmd) as raw:
            encode_stream(raw, codec_for("gzip", None), MiB, store)
    assert info.value.stage == "btrfs send"
    assert "exploded" in info.value.detail
    assert sorted(store.volumes) == [0, 1]
    assert child_processes() == []


def test_send_not_read_to_the_end_fails() -> None:
    with pytest.raises(PipelineError, match="not read to its end") as info:
        with run_send(python_command("import os; os.write(1, bytes(3_000_000))")) as raw:
            raw.read(10)
    assert info.value.stage == "btrfs send"
    assert child_processes() == []


# --- btrfs receive -------------------------------------------------------------------------


def test_receive_into_a_directory_by_descriptor(source: Path, make_btrfs: MakeBtrfs) -> None:
    snap = snapshot(source, source.parent / "snap")
    dst = make_btrfs("dst")
    fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with btrfs.Receive(fd) as receive, run_send(send_command(snap, None)) as raw:
            while data := raw.read(MiB):
                os.write(receive.stdin, data)
            receive.finish()
    finally:
        os.close(fd)
    assert (dst / "snap" / "file.txt").read_text() == "hello\n"
    assert btrfs.subvolume_info(dst / "snap").received_uuid == btrfs.inspect(snap).uuid
    # btrfs send names a received subvolume by the subvolume it came from.
    assert btrfs.send_uuid(dst / "snap") == btrfs.send_uuid(snap) == btrfs.inspect(snap).uuid
    assert child_processes() == []


def test_receive_failing_says_why_without_its_chatter(btrfs_fs: Path) -> None:
    fd = os.open(btrfs_fs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with btrfs.Receive(fd) as receive:
            os.write(receive.stdin, b"not a send stream at all")
            with pytest.raises(OperationalError) as raised:
                receive.finish()
    finally:
        os.close(fd)
    message = str(raised.value)
    assert message.startswith("btrfs receive failed: ")
    assert "Chroot to" not in message and message != "btrfs receive failed: "
    assert child_processes() == []


def test_receive_left_early_is_killed_and_reaped(btrfs_fs: Path) -> None:
    fd = os.open(btrfs_fs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with btrfs.Receive(fd):
            pass
    finally:
        os.close(fd)
    assert child_processes() == []


# --- subvolumes ----------------------------------------------------------------------------


def test_is_subvolume(source: Path, btrfs_fs: Path, tmp_path: Path) -> None:
    (btrfs_fs / "plain").mkdir()

    assert is_subvolume(source)
    assert not is_subvolume(btrfs_fs / "plain")
    assert not is_subvolume(btrfs_fs / "missing")
    assert not is_subvolume(tmp_path)


def test_same_filesystem(source: Path, btrfs_fs: Path, make_btrfs: MakeBtrfs) -> None:
    other = make_btrfs("other")
    make_subvolume(btrfs_fs / "another-subvolume")

    # Subvolumes have their own st_dev, yet belong to one filesystem.
    assert source.stat().st_dev != btrfs_fs.stat().st_dev
    assert same_filesystem(source, btrfs_fs / "snaps")
    assert same_filesystem(source, btrfs_fs / "another-subvolume")
    assert same_filesystem(source, source / "not" / "yet" / "made")
    assert same_filesystem(source, source / "file.txt")
    assert not same_filesystem(source, other)
    assert not same_filesystem(source, other / "snaps")


def test_same_filesystem_is_false_off_btrfs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()

    assert not same_filesystem(tmp_path, tmp_path / "a")


def test_subvolume_info_and_ids(source: Path, btrfs_fs: Path) -> None:
    snap = snapshot(source, btrfs_fs / "snap")
    plain = btrfs_fs / "plain"
    plain.mkdir()

    assert btrfs.inspect(snap).parent_uuid == btrfs.inspect(source).uuid
    assert btrfs.inspect(source).parent_uuid is None
    assert btrfs.inspect(source).received_uuid is None
    assert btrfs.send_uuid(snap) == btrfs.inspect(snap).uuid
    assert btrfs.is_read_only(snap) and not btrfs.is_read_only(source)
    assert btrfs.subvolume_id(source / "not" / "yet") == btrfs.subvolume_id(source)
    assert btrfs.subvolume_id(plain) == btrfs.subvolume_id(btrfs_fs) != btrfs.subvolume_id(snap)
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert btrfs.subvolume_id_of(fd) == btrfs.subvolume_id(source)
    finally:
        os.close(fd)
    assert btrfs.in_subvolume_of(source / "new-dir", source)
    assert not btrfs.in_subvolume_of(btrfs_fs / "snaps", source)
    with pytest.raises(OperationalError, match=f"cannot inspect {plain}"):
        btrfs.inspect(plain)


def test_nested_subvolumes_at_any_depth(source: Path) -> None:
    make_subvolume(source / "a")
    (source / "dir").mkdir()
    make_subvolume(source / "dir" / "b")
    make_subvolume(source / "a" / "c")

    nested = btrfs.nested_subvolumes(source)

    assert sorted(nested.paths) == [source / "a", source / "a" / "c", source / "dir" / "b"]
    assert nested.unnamed == 0


def test_create_and_delete(btrfs_fs: Path) -> None:
    made = btrfs_fs / "made"
    btrfs.create_subvolume(made)
    btrfs.create_snapshot(made, btrfs_fs / "copy", read_only=True)
    assert is_subvolume(made) and btrfs.is_read_only(btrfs_fs / "copy")
    btrfs.delete_subvolume(btrfs_fs / "copy")
    assert not (btrfs_fs / "copy").exists()
    with pytest.raises(OSError):
        btrfs.delete_subvolume(btrfs_fs / "copy")

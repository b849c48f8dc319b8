"""The send → volumes → compress → encrypt pipeline and its reverse, with the real tools.

Nothing is mocked: pigz, zstd, gpg, btrfs send and btrfs receive run for real, because the
pipeline's job is to wire those tools together correctly and report their failures honestly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btrsendd.config import EncryptionConfig, PipelineConfig
from btrsendd.errors import PipelineError, StorageError
from btrsendd.pipeline import (
    Codec,
    Compression,
    DecodedVolume,
    VolumeResult,
    decode_volume,
    encode_stream,
    run_send,
    send_command,
)
from btrsendd.storage.base import Readable, Stored
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MiB = 1024 * 1024


def random_data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def compressible_data(size: int) -> bytes:
    lines = b"".join(
        b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(size // 50 + 1)
    )
    return lines[:size]


# 3.5 MiB: three full 1 MiB volumes and a short last one.
DATA = {"random": random_data(7 * MiB // 2), "compressible": compressible_data(7 * MiB // 2)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codec_for(compression: Compression, key: GpgKey | None, level: int | None = None) -> Codec:
    """A codec as the backup host has it: encrypting to public keys only."""
    return Codec(
        compression=compression,
        level=level if level is not None else (3 if compression == "zstd" else 6),
        recipients=(key.fingerprint,) if key else (),
        gnupg_home=key.public_home if key else None,
    )


class MemoryStore:
    """A ``store_volume`` that keeps volumes in memory.

    It reads in pieces that match neither the volume nor the pipeline's chunk size, as a
    multipart upload would, and only keeps a volume it read to the end.
    """

    def __init__(self, read_size: int = 300_000) -> None:
        self.read_size = read_size
        self.volumes: dict[int, bytes] = {}

    def __call__(self, index: int, stream: Readable) -> Stored:
        pieces = []
        while piece := stream.read(self.read_size):
            pieces.append(piece)
        self.volumes[index] = b"".join(pieces)
        return Stored(len(self.volumes[index]), f"mem-{index}")


def decode_all(
    store: MemoryStore, results: list[VolumeResult], codec: Codec, home: Path | None
) -> bytes:
    """Decode every volume, checking what decoding saw against what encoding recorded."""
    out = io.BytesIO()
    for vol in results:
        got = decode_volume(io.BytesIO(store.volumes[vol.index]), codec, out, gnupg_home=home)
        assert got == DecodedVolume(
            vol.stored_size, vol.stored_sha256, vol.raw_length, vol.raw_sha256
        )
    return out.getvalue()


#: What the pipeline starts; other children (session-scoped S3 servers) are not its leaks.
PIPELINE_PROGRAMS = {"btrfs", "gzip", "pigz", "zstd", "gpg"}


def child_processes() -> list[str]:
    """This process's pipeline children, zombies included: what a leak would leave behind."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        comm_end = text.rindex(")")
        state, ppid = text[comm_end + 2 :].split()[:2]
        name = text[text.index("(") + 1 : comm_end]
        if int(ppid) == me and name in PIPELINE_PROGRAMS:
            found.append(f"{stat.parent.name} {name} {state}")
    return found


def python_command(code: str) -> list[str]:
    """A stand-in for ``btrfs send`` whose behaviour a test controls exactly."""
    return [sys.executable, "-c", code]


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "gpg"])
def test_round_trip(kind: str, compression: Compression, encrypted: bool, gpg_key: GpgKey) -> None:
    data = DATA[kind]
    codec = codec_for(compression, gpg_key if encrypted else None)
    store = MemoryStore()
    progress: list[int] = []

    results = encode_stream(io.BytesIO(data), codec, MiB, store, progress.append)

    assert [(v.index, v.raw_offset, v.raw_length) for v in results] == [
        (0, 0, MiB),
        (1, MiB, MiB),
        (2, 2 * MiB, MiB),
        (3, 3 * MiB, len(data) - 3 * MiB),
    ]
    for vol in results:
        raw = data[vol.raw_offset : vol.raw_offset + vol.raw_length]
        stored = store.volumes[vol.index]
        assert vol.raw_sha256 == sha256(raw)
        assert (vol.stored_size, vol.stored_sha256) == (len(stored), sha256(stored))
        assert vol.stored_checksum == f"mem-{vol.index}"  # the backend's, passed through
        if encrypted:
            assert raw[:64] not in stored
        elif compression == "gzip":
            assert gzip.decompress(stored) == raw  # plain gzip: readable by any gunzip
        elif compression == "zstd":
            assert stored.startswith(b"\x28\xb5\x2f\xfd")  # the zstd frame magic
        else:
            assert stored == raw
    if kind == "compressible" and compression != "none":
        assert sum(v.stored_size for v in results) < len(data) // 4
    assert progress == sorted(progress) and progress[-1] == len(data)

    assert decode_all(store, results, codec, gpg_key.secret_home) == data
    assert child_processes() == []


@pytest.mark.parametrize(
    ("size", "volume_size", "count"),
    [(2 * MiB, MiB, 2), (900_000, 300_000, 3), (MiB + 1, MiB, 2), (1, MiB, 1)],
)
def test_volume_boundaries(size: int, volume_size: int, count: int) -> None:
    """A stream of exactly N volumes makes N volumes, not N + 1 with an empty one."""
    data = random_data(size, seed=size)
    codec = codec_for("gzip", None)
    store = MemoryStore()
    results = encode_stream(io.BytesIO(data), codec, volume_size, store)
    assert len(results) == count == len(store.volumes)
    assert all(v.raw_length == volume_size for v in results[:-1])
    assert sum(v.raw_length for v in results) == size
    assert decode_all(store, results, codec, None) == data


def test_empty_input_makes_no_volume() -> None:
    store = MemoryStore()
    progress: list[int] = []
    assert (
        encode_stream(io.BytesIO(b""), codec_for("zstd", None), MiB, store, progress.append) == []
    )
    assert store.volumes == {} and progress == []


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_volumes_concatenate_to_the_input(data: st.DataObject) -> None:
    """Whatever the sizes, volumes are full but the last and concatenate back to the input."""
    volume_size = data.draw(st.integers(1, 5000), label="volume_size")
    payload = data.draw(st.binary(max_size=12 * volume_size), label="payload")
    codec = codec_for("none", None)
    store = MemoryStore(read_size=data.draw(st.integers(1, 3 * volume_size), label="read_size"))
    results = encode_stream(io.BytesIO(payload), codec, volume_size, store)
    assert len(results) == -(-len(payload) // volume_size)
    assert all(v.raw_length == volume_size for v in results[:-1])
    assert b"".join(store.volumes[v.index] for v in results) == payload


def test_decode_into_a_file_descriptor(tmp_path: Path, gpg_key: GpgKey) -> None:
    """``btrfs receive``'s stdin is handed over as a bare descriptor."""
    data = DATA["compressible"]
    codec = codec_for("zstd", gpg_key)
    store = MemoryStore()
    results = encode_stream(io.BytesIO(data), codec, 2 * MiB, store)
    target = tmp_path / "out"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        for vol in results:
            stored = io.BytesIO(store.volumes[vol.index])
            decode_volume(stored, codec, fd, gnupg_home=gpg_key.secret_home)
    finally:
        os.close(fd)
    assert target.read_bytes() == data


def test_decode_passes_on_what_has_arrived() -> None:
    """Decoded bytes go on to ``out`` as they come, not once a whole chunk has gathered:
    ``btrfs receive`` works on them while the stages produce the rest."""

    class Trickle:
        """Stored bytes in two pieces, the second a second after the first."""

        def __init__(self) -> None:
            self.pieces = [b"abc", b"defgh"]

        def read(self, size: int = -1, /) -> bytes:
            if len(self.pieces) == 1:
                time.sleep(1)
            return self.pieces.pop(0) if self.pieces else b""

    class Writes(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def write(self, data: ReadableBuffer, /) -> int:
            self.sizes.append(memoryview(data).nbytes)
            return super().write(data)

    out = Writes()
    got = decode_volume(Trickle(), codec_for("none", None), out)
    assert out.getvalue() == b"abcdefgh" and out.sizes == [3, 5]
    assert (got.raw_length, got.raw_sha256) == (8, sha256(b"abcdefgh"))


@pytest.mark.parametrize(
    ("compression", "encrypted", "suffix"),
    [
        ("gzip", True, "btrfs.gz.gpg"),
        ("zstd", True, "btrfs.zst.gpg"),
        ("none", True, "btrfs.gpg"),
        ("gzip", False, "btrfs.gz"),
        ("zstd", False, "btrfs.zst"),
        ("none", False, "btrfs"),
    ],
)
def test_suffix(compression: Compression, encrypted: bool, suffix: str) -> None:
    recipients = ("F" * 40,) if encrypted else ()
    assert Codec(compression, 6, recipients, None).suffix == suffix


def test_codec_from_config() -> None:
    pipeline = PipelineConfig(compression="zstd", level=9)
    home = Path("/etc/keys")
    gpg = EncryptionConfig(mode="gpg", recipients=("ABC",), gnupg_home=home)
    assert Codec.from_config(pipeline, gpg) == Codec("zstd", 9, ("ABC",), home)
    plain = EncryptionConfig(mode="none", recipients=("ABC",), gnupg_home=home)
    assert Codec.from_config(PipelineConfig(), plain) == Codec("gzip", 6, (), home)


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


# --- failures --------------------------------------------------------------------------


def test_unknown_recipient_names_gpg(gpg_key: GpgKey) -> None:
    codec = Codec("gzip", 6, ("0" * 40,), gpg_key.public_home)
    store = MemoryStore()
    with pytest.raises(PipelineError) as info:
        encode_stream(io.BytesIO(DATA["random"]), codec, MiB, store)
    assert info.value.stage == "gpg"
    assert "No public key" in info.value.detail
    assert store.volumes == {}  # the failure reached the store as an error, not as an EOF
    assert child_processes() == []


def test_stage_error_survives_a_wrapping_backend(gpg_key: GpgKey) -> None:
    """A backend that turns read errors into its own still lets the failed stage be named."""

    def wrapping_store(index: int, stream: Readable) -> Stored:
        try:
            return MemoryStore()(index, stream)
        except Exception as exc:
            raise StorageError("upload aborted") from exc

    codec = Codec("zstd", 3, ("0" * 40,), gpg_key.public_home)
    with pytest.raises(PipelineError) as info:
        encode_stream(io.BytesIO(DATA["random"]), codec, MiB, wrapping_store)
    assert info.value.stage == "gpg"
    assert child_processes() == []


@pytest.mark.skipif(shutil.which("pigz") is None, reason="needs pigz")
def test_failing_compressor_is_named_with_its_stderr(gpg_key: GpgKey) -> None:
    codec = codec_for("gzip", gpg_key, level=99)
    with pytest.raises(PipelineError) as info:
        encode_stream(io.BytesIO(DATA["random"]), codec, MiB, MemoryStore())
    assert info.value.stage == "compressor (pigz)"
    assert "levels" in info.value.detail  # pigz: "only levels 0..9 and 11 are allowed"
    assert child_processes() == []


def test_killed_compressor_is_named(gpg_key: GpgKey) -> None:
    """gpg encrypts the truncated stream and exits 0: only the compressor knows it failed."""

    def kill_zstd(done: int) -> None:
        for child in child_processes():
            pid, comm, _ = child.split()
            if comm == "zstd":
                os.kill(int(pid), signal.SIGKILL)

    store = MemoryStore()
    with pytest.raises(PipelineError) as info:
        encode_stream(
            io.BytesIO(random_data(8 * MiB)), codec_for("zstd", gpg_key), 64 * MiB, store, kill_zstd
        )
    assert info.value.stage == "compressor (zstd)"
    assert "signal 9" in info.value.detail
    assert store.volumes == {}
    assert child_processes() == []


@pytest.mark.parametrize(
    ("codec", "stage", "hint"),
    [
        (Codec("zstd", 3, (), None), "compressor (zstd)", "install zstd"),
        (Codec("gzip", 6, (), None), "compressor (gzip)", "install pigz"),
        (Codec("none", 0, ("F" * 40,), None), "gpg", "install gnupg"),
    ],
)
def test_missing_tool_says_what_to_install(
    codec: Codec, stage: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PipelineError) as info:
        encode_stream(io.BytesIO(b"data"), codec, MiB, MemoryStore())
    assert info.value.stage == stage
    assert hint in info.value.detail


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


def test_store_raising_kills_everything(gpg_key: GpgKey) -> None:
    def failing_store(index: int, stream: Readable) -> Stored:
        stream.read(100_000)
        raise RuntimeError("disk full")

    endless = python_command("import os\nwhile True: os.write(1, os.urandom(65536))")
    with pytest.raises(RuntimeError, match="disk full"):
        with run_send(endless) as raw:
            encode_stream(raw, codec_for("gzip", gpg_key), MiB, failing_store)
    assert child_processes() == []


def test_store_stopping_early_is_an_error() -> None:
    def lazy_store(index: int, stream: Readable) -> Stored:
        return Stored(len(stream.read(10)))

    with pytest.raises(StorageError, match="before the end"):
        encode_stream(io.BytesIO(DATA["random"]), codec_for("zstd", None), MiB, lazy_store)
    assert child_processes() == []


def test_store_misreporting_its_size_is_an_error() -> None:
    def miscounting_store(index: int, stream: Readable) -> Stored:
        return Stored(MemoryStore()(index, stream).size + 1)

    with pytest.raises(StorageError, match="reports"):
        encode_stream(io.BytesIO(DATA["random"]), codec_for("zstd", None), MiB, miscounting_store)


@pytest.mark.parametrize("keyring", ["public only", "other key"])
def test_decode_without_the_secret_key_names_gpg(
    keyring: str, gpg_key: GpgKey, other_gpg_key: GpgKey
) -> None:
    codec = codec_for("gzip", gpg_key)
    store = MemoryStore()
    [vol] = encode_stream(io.BytesIO(DATA["compressible"][:MiB]), codec, MiB, store)
    home = gpg_key.public_home if keyring == "public only" else other_gpg_key.secret_home
    with pytest.raises(PipelineError) as info:
        decode_volume(io.BytesIO(store.volumes[vol.index]), codec, io.BytesIO(), gnupg_home=home)
    assert info.value.stage == "gpg"
    assert "No secret key" in info.value.detail
    assert child_processes() == []


@pytest.mark.parametrize(
    ("compression", "encrypted"), [("gzip", True), ("zstd", True), ("gzip", False), ("zstd", False)]
)
def test_flipped_byte_is_detected(
    compression: Compression, encrypted: bool, gpg_key: GpgKey
) -> None:
    codec = codec_for(compression, gpg_key if encrypted else None)
    store = MemoryStore()
    [vol] = encode_stream(io.BytesIO(DATA["compressible"][:MiB]), codec, MiB, store)
    damaged = bytearray(store.volumes[vol.index])
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(PipelineError) as info:
        decode_volume(
            io.BytesIO(bytes(damaged)), codec, io.BytesIO(), gnupg_home=gpg_key.secret_home
        )
    if encrypted:
        assert info.value.stage == "gpg" or info.value.stage.startswith("decompressor (")
    else:
        assert info.value.stage.startswith("decompressor (")
    assert info.value.detail
    assert child_processes() == []


# --- memory ----------------------------------------------------------------------------

MEMORY_PROBE = """
import resource
from btrsendd.pipeline import Codec, encode_stream
from btrsendd.storage.base import Stored

class Zeros:
    def __init__(self, size):
        self.left = size

    def read(self, size=-1, /):
        n = self.left if size < 0 else min(size, self.left)
        self.left -= n
        return b"\\0" * n  # written, unlike bytes(n): untouched zero pages cost no RSS

def discard(index, stream):
    n = 0
    while chunk := stream.read(8 << 20):
        n += len(chunk)
    return Stored(n)

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = encode_stream(Zeros(200 << 20), Codec("zstd", 1, (), None), 64 << 20, discard)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(results), sum(v.raw_length for v in results), (after - before) * 1024)
"""


def test_memory_stays_flat() -> None:
    """200 MiB in 64 MiB volumes: peak memory must not grow by anything like a volume.

    Measured in a fresh interpreter, where the peak before encoding is the baseline; in
    this process earlier tests would already have raised the peak and hidden any growth.
    """
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True
    )
    volumes, raw_bytes, growth = map(int, probe.stdout.split())
    assert (volumes, raw_bytes) == (4, 200 * MiB)
    assert growth < 64 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB"

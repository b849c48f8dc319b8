"""The codec: send stream → volumes → compress → encrypt and its reverse, with the real tools.

Nothing is mocked: pigz, zstd and gpg run for real, because the codec's job is to wire those
tools together correctly and report their failures honestly.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
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
from btrsendd.pipeline.codec import Codec, Compression, decode_volume, encode_stream
from btrsendd.storage.base import Readable, Stored
from tests.fixtures.gpg import GpgKey
from tests.pipeline.support import (
    DATA,
    MemoryStore,
    MiB,
    child_processes,
    codec_for,
    decode_all,
    random_data,
    sha256,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


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


# --- failures --------------------------------------------------------------------------


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
from btrsendd.pipeline.codec import Codec, encode_stream
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

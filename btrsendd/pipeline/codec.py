"""The codec: raw send-stream bytes → volumes → compressor → gpg → storage, and back again.

A send stream is cut into volumes of ``volume_size`` raw bytes; each volume runs through
the compressor (pigz or gzip, zstd, or none) and gpg (``gpg.py``), as a chain of programs
joined by pipes (``piper.py``), and what comes out is handed to the storage as it is made.
Python touches the bytes only where it has to: on the way in to cut the stream into volumes
and hash the raw bytes, on the way out to hash what is stored (or, on restore, what is
handed to ``btrfs receive``).  A volume is never stored whole unless every stage that made
it exited cleanly (``piper``'s rule: end of stream means success).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from btrsendd.errors import OperationalError, StorageError
from btrsendd.layout import volume_name
from btrsendd.model import Volume
from btrsendd.pipeline import gpg
from btrsendd.pipeline.piper import Flow, Stage, enlarge, find_tool, write_all
from btrsendd.pipeline.readers import CHUNK, readinto_of
from btrsendd.storage.base import Readable, Stored

if TYPE_CHECKING:
    from btrsendd.config import EncryptionConfig, PipelineConfig

Compression = Literal["gzip", "zstd", "none"]

_EXTENSIONS: dict[Compression, str] = {"gzip": ".gz", "zstd": ".zst", "none": ""}


@dataclass(frozen=True)
class Codec:
    """How stored bytes are produced from raw send-stream bytes (and so how to undo it)."""

    compression: Compression
    level: int
    #: gpg fingerprints; the empty tuple means no encryption (encryption mode "none").
    recipients: tuple[str, ...]
    #: The keyring used to encrypt; ``None`` leaves gpg to its own default (``GNUPGHOME``).
    gnupg_home: Path | None

    @classmethod
    def from_config(cls, pipeline: PipelineConfig, encryption: EncryptionConfig) -> Codec:
        """The codec a configuration asks for, so every caller derives it the same way."""
        return cls(
            compression=pipeline.compression,
            level=pipeline.effective_level,
            recipients=encryption.recipients if encryption.mode == "gpg" else (),
            gnupg_home=encryption.gnupg_home,
        )

    @classmethod
    def stored_as(cls, compression: str, recipients: tuple[str, ...]) -> Codec:
        """The codec that reads back what a backup recorded it was stored with (catalog
        values, from a checked manifest or this btrsendd)."""
        for known in _EXTENSIONS:
            if known == compression:
                return cls(known, 1, recipients, None)
        raise OperationalError(
            f"unknown compression {compression!r} in the catalog; upgrade btrsendd"
        )

    @property
    def extension(self) -> str:
        """What encoding adds to an object's name, e.g. ``.gz.gpg`` (nothing for none)."""
        return _EXTENSIONS[self.compression] + (".gpg" if self.recipients else "")

    @property
    def suffix(self) -> str:
        """The object-name suffix, e.g. ``btrfs.gz.gpg``: says how to read a volume back."""
        return "btrfs" + self.extension


@dataclass(frozen=True)
class DecodedVolume:
    """What decoding one volume saw at both ends, to check against the manifest."""

    stored_size: int
    stored_sha256: str
    raw_length: int
    raw_sha256: str


def _compression_stage(codec: Codec, *, decompress: bool) -> Stage | None:
    if codec.compression == "none":
        return None
    role = "decompressor" if decompress else "compressor"
    if codec.compression == "gzip":
        # pigz writes the same gzip format as gzip, on every core.
        name, path = find_tool(f"{role} (gzip)", ("pigz", "gzip"), "pigz")
        # -n: no name or timestamp in the header, so the same input gives the same bytes.
        argv = [path, "-dc"] if decompress else [path, "-c", "-n", f"-{codec.level}"]
    else:
        name, path = find_tool(f"{role} (zstd)", ("zstd",), "zstd")
        if decompress:
            argv = [path, "-dc", "-q"]
        else:
            # zstd silently caps levels above 19 unless told --ultra.
            ultra = ["--ultra"] if codec.level > 19 else []
            argv = [path, "-T0", *ultra, f"-{codec.level}", "-q", "-c"]
    return Stage(f"{role} ({name})", tuple(argv))


def _encode_stages(codec: Codec) -> list[Stage]:
    stages: list[Stage] = []
    compressor = _compression_stage(codec, decompress=False)
    if compressor is not None:
        stages.append(compressor)
    if codec.recipients:
        stages.append(gpg.encrypt_stage(codec.gnupg_home, codec.recipients))
    return stages


def _decode_stages(codec: Codec, gnupg_home: Path | None) -> list[Stage]:
    stages: list[Stage] = []
    if codec.recipients:
        stages.append(gpg.decrypt_stage(gnupg_home))
    decompressor = _compression_stage(codec, decompress=True)
    if decompressor is not None:
        stages.append(decompressor)
    return stages


class _Volume:
    """The ``fill`` of one volume: ``volume_size`` bytes at most from ``readinto``.

    Its first call reports the ``first`` bytes that ``encode_volumes`` already read into
    the very buffer the feeder fills (the read that told it the volume exists), so they
    are neither read twice nor copied.
    """

    def __init__(self, readinto: Callable[[memoryview], int], first: int, volume_size: int) -> None:
        self._readinto = readinto
        self._first = first
        self._remaining = volume_size - first

    def __call__(self, view: memoryview) -> int:
        if self._first:
            count, self._first = self._first, 0
            return count
        if self._remaining <= 0:
            return 0
        count = self._readinto(view[: min(len(view), self._remaining)])
        self._remaining -= count
        return count


def _progress(
    start: int, on_progress: Callable[[int], None] | None
) -> Callable[[int], None] | None:
    """Turn per-chunk byte counts into the running total of raw bytes that ``on_progress`` wants."""
    if on_progress is None:
        return None
    done = start

    def advance(count: int) -> None:
        nonlocal done
        done += count
        on_progress(done)

    return advance


def encode_stream(
    raw: Readable,
    codec: Codec,
    volume_size: int,
    store_volume: Callable[[int, Readable], Stored],
    on_progress: Callable[[int], None] | None = None,
) -> list[Volume]:
    """All volumes of ``raw`` at once: ``encode_volumes`` for callers that need no resume."""
    return list(encode_volumes(raw, codec, volume_size, store_volume, on_progress))


def encode_volumes(
    raw: Readable,
    codec: Codec,
    volume_size: int,
    store_volume: Callable[[int, Readable], Stored],
    on_progress: Callable[[int], None] | None = None,
    *,
    first_index: int = 0,
    first_offset: int = 0,
) -> Iterator[Volume]:
    """Split ``raw`` into volumes, compress and encrypt each, and hand each to ``store_volume``.

    Each volume holds ``volume_size`` raw bytes (the last may hold fewer; empty input makes
    no volume).  ``store_volume(index, stored)`` must read ``stored`` to its end and return
    what it stored (``Stored``: size and the backend's checksum); ``stored.read`` raises
    ``PipelineError`` instead of ending if a stage (or ``raw`` itself) failed, so a failed
    volume is never stored whole.
    ``on_progress(raw_bytes_so_far)`` is called from the feeder thread as raw bytes enter
    the pipeline.  Volumes are processed one after the other, which bounds memory, and each
    is yielded once stored, named as ``layout.volume_name`` says, so the caller can record
    it before the next one starts: that record is what a resumed upload skips.  A resumed
    upload starts numbering at ``first_index`` and counting raw bytes at ``first_offset``.
    """
    if volume_size <= 0:
        raise ValueError(f"volume_size must be positive, not {volume_size}")
    stages = _encode_stages(codec)
    suffix = codec.suffix
    index = first_index
    offset = first_offset
    readinto = readinto_of(raw)
    # One buffer carries the whole stream into the pipeline, volume after volume.
    buffer = memoryview(bytearray(CHUNK))
    # Read a volume's first chunk before starting its stages: only then is it known that
    # another volume exists at all (an input of exactly N volumes must not make N + 1).
    while first := readinto(buffer[: min(CHUNK, volume_size)]):
        fill = _Volume(readinto, first, volume_size)
        with Flow(stages, fill, buffer, _progress(offset, on_progress)) as flow:
            stored = flow.output
            try:
                result = store_volume(index, stored)
            except BaseException as exc:
                # A backend may wrap what read() raised in an error of its own; the stage
                # that failed is what the user needs to hear about.
                if stored.error is not None and stored.error is not exc:
                    raise stored.error from None
                raise
            if not stored.at_eof:
                raise StorageError(f"storing volume {index} stopped before the end of its data")
            if result.size != stored.size:
                raise StorageError(
                    f"volume {index}: the storage reports {result.size} bytes stored, "
                    f"but the volume has {stored.size}"
                )
        yield Volume(
            index=index,
            name=volume_name(index, suffix),
            raw_offset=offset,
            raw_length=flow.input_size,
            raw_sha256=flow.input_sha256,
            stored_size=stored.size,
            stored_sha256=stored.sha256,
            stored_checksum=result.checksum,
            version=result.version,
        )
        index += 1
        offset += flow.input_size


def decode_volume(
    stored: Readable,
    codec: Codec,
    out: IO[bytes] | int,
    *,
    gnupg_home: Path | None = None,
    inspect: Callable[[memoryview], None] | None = None,
) -> DecodedVolume:
    """Decrypt and decompress one stored volume into ``out`` (a file or a file descriptor).

    ``gnupg_home`` overrides ``codec.gnupg_home``: the restore host's keyring, which holds
    the private key, is rarely the backup host's.  Both ends are hashed so the caller can
    check them against the manifest.  ``inspect`` sees every decoded chunk before ``out``
    does, and may refuse it by raising.  A failing stage raises ``PipelineError`` once the
    output ends, after the bytes before the failure were written: the caller must treat
    everything written for this volume as void (e.g. abort ``btrfs receive``).  A failing
    ``out`` (``btrfs receive`` exited) raises its ``OSError``: the caller knows that process.
    """
    stages = _decode_stages(codec, gnupg_home if gnupg_home is not None else codec.gnupg_home)
    write: Callable[[memoryview], int] = (
        partial(os.write, out) if isinstance(out, int) else out.write
    )
    if isinstance(out, int):
        # Usually btrfs receive's stdin; made by ``piper`` at this size already, but any
        # other descriptor gets the same chance.
        enlarge(out)
    buffers = memoryview(bytearray(2 * CHUNK))
    into_stages, out_of_stages = buffers[:CHUNK], buffers[CHUNK:]
    with Flow(stages, readinto_of(stored), into_stages, None) as flow:
        # Whatever arrives goes on at once: btrfs receive works while we wait for more.
        while count := flow.output.readinto1(out_of_stages):
            if inspect is not None:
                inspect(out_of_stages[:count])
            write_all(write, out_of_stages[:count])
    if not isinstance(out, int):
        out.flush()
    return DecodedVolume(
        stored_size=flow.input_size,
        stored_sha256=flow.input_sha256,
        raw_length=flow.output.size,
        raw_sha256=flow.output.sha256,
    )

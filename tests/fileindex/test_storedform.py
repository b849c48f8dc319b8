"""The stored form of a file index: every record round-trips, and a damaged, cut or forged
index is refused with one line saying where, never with anything but ``FileIndexError``."""

from __future__ import annotations

import io
import random

import pytest

from btrsendd.fileindex import records as r
from btrsendd.fileindex import wire as w
from btrsendd.fileindex.storedform import MAGIC, IndexWriter, read_index

HEADER = r.Header(1, "2026-12-01", "11" * 16, "22" * 16)
EVERY_KIND: list[r.Record] = [
    r.Mkfile("o257-7-0"),
    r.Mkdir("dir"),
    r.Mknod("fifo", 0o10644, 0),
    r.Symlink("link", "../somewhere else"),
    r.Rename("o257-7-0", "dir/f\udcff name"),
    r.Link("dir/hard", "dir/f\udcff name"),
    r.Unlink("gone"),
    r.Rmdir("gone-dir"),
    r.SetXattr("dir", b"user.k", b"\x00\xffv"),
    r.RemoveXattr("dir", b"user.old"),
    r.Write("dir/hard", 4096, 49152, 123_456_789),
    r.Clone("dir/copy", 0, 131072, "dir/hard", 0, "ab" * 16, 42),
    r.EncodedWrite("z", 0, 131072, 131072, 0, 3, 0, 4000, 99),
    r.Truncate("dir/hard", 1 << 40),
    r.Fallocate("dir/hard", 3, 0, 8192),
    r.Chmod("dir", 0o40755),
    r.Chown("", 1000, 100),
    r.Utimes("", -1_500_000_000, 1_700_000_000_123_456_789, 0),
    r.Fileattr("dir", 0x10),
    r.UpdateExtent("dir/hard", 0, 4096),
    r.EnableVerity("dir/hard"),
]


def _stored(records: list[r.Record], header: r.Header = HEADER, size: int = 777) -> bytes:
    out = io.BytesIO()
    writer = IndexWriter(out, header)
    for record in records:
        writer.write(record)
    writer.end(size)
    return out.getvalue()


def test_every_kind_of_record_round_trips() -> None:
    index = read_index(io.BytesIO(_stored(EVERY_KIND)), "t")
    assert index.header == HEADER
    assert list(index.records) == EVERY_KIND
    assert index.stream_size == 777


def test_a_full_backups_index_has_no_parent() -> None:
    header = r.Header(2, "full", "33" * 16, None)
    assert read_index(io.BytesIO(_stored([], header)), "t").header == header


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a btrsendd file index"),
        (b"btrfs-stream\0\1\0\0\0", "not a btrsendd file index"),
        (MAGIC + w.U32.pack(9), "version 9 is not one this btrsendd reads"),
        (MAGIC + w.U32.pack(1), "lacks its send stream header"),
    ],
)
def test_what_is_not_an_index_says_so(data: bytes, message: str) -> None:
    with pytest.raises(r.FileIndexError, match=message):
        read_index(io.BytesIO(data), "t")


def test_an_index_cut_anywhere_is_refused() -> None:
    data = _stored(EVERY_KIND)
    for cut in range(len(data)):
        with pytest.raises(r.FileIndexError, match=r"^t: "):
            read_index(io.BytesIO(data[:cut]), "t")


def test_anything_after_the_end_is_refused() -> None:
    with pytest.raises(r.FileIndexError, match="goes on after its end"):
        read_index(io.BytesIO(_stored(EVERY_KIND) + b"\0"), "t")


def test_damage_anywhere_gives_an_index_error_or_other_records_never_a_crash() -> None:
    data = _stored(EVERY_KIND)
    rng = random.Random(5)
    refused = 0
    for _ in range(3000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            read_index(io.BytesIO(bytes(damaged)), "t")
        except r.FileIndexError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert refused > 1500


def test_a_command_claiming_a_huge_length_is_refused_before_it_is_read() -> None:
    data = bytearray(_stored([r.Mkfile("a")]))
    at = data.index(w.U16.pack(w.MKFILE)) - 4
    data[at : at + 4] = w.U32.pack(0xFFFFFFFF)
    with pytest.raises(r.FileIndexError, match="claims 4294967295 bytes"):
        read_index(io.BytesIO(bytes(data)), "t")


def test_a_path_with_a_nul_or_too_long_is_refused() -> None:
    for bad in ("a\0b", "x" * 5000):
        with pytest.raises(r.FileIndexError, match="not a path btrfs allows"):
            read_index(io.BytesIO(_stored([r.Mkfile(bad)])), "t")

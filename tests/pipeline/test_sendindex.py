"""The file index written from real send streams: every command recorded, every data payload
found where the record says, however the stream is cut."""

from __future__ import annotations

import io
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import btrfsutil
import pytest

from btrsendd.fileindex import records as r
from btrsendd.fileindex.storedform import IndexWriter, read_index
from btrsendd.pipeline.sendindex import StreamIndexer, index_stream
from btrsendd.pipeline.sendstream import StreamError
from tests.fixtures.btrfs import loop_btrfs, make_subvolume
from tests.support import sendstreams as ss
from tests.support.trees import mutate, populate

Streams = dict[str, tuple[bytes, Path]]


def _send(*args: str) -> bytes:
    return subprocess.run(["btrfs", "-q", "send", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streams]:
    """A full and an incremental stream, and the snapshots they were sent from."""
    work = tmp_path_factory.mktemp("sendindex")
    with loop_btrfs(work) as fs:
        src = make_subvolume(fs / "src")
        populate(src)
        subprocess.run(["cp", "--reflink=always", src / "bin.dat", src / "clone.dat"], check=True)
        s1, s2 = fs / "s1", fs / "s2"
        btrfsutil.create_snapshot(src, s1, read_only=True)
        mutate(src, 1)
        subprocess.run(["cp", "--reflink=always", src / "bin.dat", src / "clone2.dat"], check=True)
        btrfsutil.create_snapshot(src, s2, read_only=True)
        yield {"full": (_send(str(s1)), s1), "incremental": (_send("-p", str(s1), str(s2)), s2)}


def _index(data: bytes, cuts: list[int]) -> bytes:
    out = io.BytesIO()
    indexer = StreamIndexer(out)
    start = 0
    for stop in [*cuts, len(data)]:
        indexer.feed(data[start:stop])
        start = stop
    indexer.finish()
    return out.getvalue()


def _read(index: bytes) -> r.Index:
    return read_index(io.BytesIO(index), "test")


@pytest.mark.parametrize("kind", ["full", "incremental"])
def test_the_index_is_the_same_however_the_stream_is_cut(streams: Streams, kind: str) -> None:
    data, _ = streams[kind]
    whole = _index(data, [])
    rng = random.Random(3)
    for chunk in (1, 7, 4096, 65536 + 3):
        cuts = list(range(chunk, len(data), chunk)) if chunk > 1 else []
        if chunk == 1:  # byte by byte is slow on MiBs: cut at every byte of the first 64 KiB
            cuts = list(range(1, 65536))
        assert _index(data, cuts) == whole, chunk
    cuts = sorted(rng.sample(range(1, len(data)), 500))
    assert _index(data, cuts) == whole


def test_a_full_streams_writes_hold_every_files_bytes(streams: Streams) -> None:
    data, snap = streams["full"]
    index = _read(_index(data, []))
    assert index.header.parent_uuid is None
    assert index.stream_size == len(data)
    # A full stream names each file once under its final path before its data (no renames
    # of files in this tree after their writes), so the writes of a path are its contents.
    names: dict[str, str] = {}
    contents: dict[str, bytearray] = {}
    for rec in index.records:
        if isinstance(rec, r.Rename):
            names[rec.to] = names.pop(rec.path, rec.path)
            if rec.path in contents:
                contents[rec.to] = contents.pop(rec.path)
        elif isinstance(rec, r.Write):
            body = contents.setdefault(rec.path, bytearray())
            payload = data[rec.stream_offset : rec.stream_offset + rec.length]
            body[len(body) :] = bytes(rec.offset + rec.length - len(body))
            body[rec.offset : rec.offset + rec.length] = payload
        elif isinstance(rec, r.Clone):
            source = contents[rec.source_path]
            body = contents.setdefault(rec.path, bytearray())
            body[len(body) :] = bytes(rec.offset + rec.length - len(body))
            chunk = source[rec.source_offset : rec.source_offset + rec.length]
            body[rec.offset : rec.offset + len(chunk)] = chunk
    checked = 0
    for path, body in contents.items():
        real = (snap / path).read_bytes()
        assert real[: len(body)] == bytes(body), path
        assert not any(real[len(body) :]), path  # the rest is a hole
        checked += 1
    assert checked >= 5


def test_an_incremental_names_its_parent_and_its_changes(streams: Streams) -> None:
    full = _read(_index(streams["full"][0], []))
    inc = _read(_index(streams["incremental"][0], []))
    assert inc.header.parent_uuid is not None
    assert full.header.parent_uuid is None
    kinds = {type(rec) for rec in inc.records}
    assert r.Write in kinds and r.Utimes in kinds
    clones = [rec for rec in inc.records if isinstance(rec, r.Clone)]
    assert clones, "cp --reflink of a file of the parent is sent as a clone"


def test_every_record_round_trips_through_the_stored_form(streams: Streams) -> None:
    for data, _ in streams.values():
        index = _index(data, [])
        out = io.BytesIO()
        parsed = _read(index)
        writer = IndexWriter(out, parsed.header)
        for rec in parsed.records:
            writer.write(rec)
        writer.end(parsed.stream_size)
        assert read_index(io.BytesIO(out.getvalue()), "rewritten") == parsed


def test_a_stream_without_its_end_has_no_index() -> None:
    data = ss.small_stream()
    with pytest.raises(StreamError, match="without its END"):
        _index(data[:-10], [])
    out = io.BytesIO()
    index_stream(io.BytesIO(data), out)
    index = _read(out.getvalue())
    assert [type(rec) for rec in index.records] == [r.Mkfile, r.Write]


def test_a_hostile_command_length_is_refused_without_buffering_it() -> None:
    data = ss.header() + ss.subvol() + (0xFFFFFFF0).to_bytes(4, "little") + bytes(6)
    with pytest.raises(StreamError, match="claims"):
        _index(data, [])

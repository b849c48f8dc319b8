"""Recreating entries (``fileindex/extract.py``) and fetching their pieces (``fetch.py``).

Synthetic entries whose pieces point into a raw stream that really is encoded into volumes
(zstd, local storage), so every byte goes the way a restore's does: selected volumes,
decoded and hash-checked, routed to files by ``pwrite``.  The end-to-end tests on btrfs
snapshots are in ``test_restore_paths.py``.
"""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from btrsendd.errors import OperationalError
from btrsendd.fileindex.entries import Entry, Piece
from btrsendd.fileindex.extract import BLOCK, Extractor, check_entries, components
from btrsendd.fileindex.fetch import VolumeWants, Wanted, fetch, needed_volumes, wanted
from btrsendd.fileindex.records import FileIndexError
from btrsendd.layout import Located
from btrsendd.model import Backup
from btrsendd.pipeline.codec import Codec, encode_stream
from btrsendd.storage.base import Readable, Stored
from btrsendd.storage.local.directory import LocalStorage
from tests.fixtures.btrfs import mounted_tmpfs

T0 = 946_684_800_000_000_000  # 2000-01-01 in ns
RAW = random.Random(7).randbytes(300_000)
VOLUME = 64 * 1024
#: ``RAW`` with the second block of the 3-block piece zeroed: a hole punched on a later day,
#: which an incremental stream sends as a write of zeros.
PUNCHED = RAW[: 200_000 + BLOCK] + bytes(BLOCK) + RAW[200_000 + 2 * BLOCK :]
ID = "2000-01-01-full-abcdef"


def row() -> Backup:
    return Backup(
        id=ID,
        source="data",
        date=date(2000, 1, 1),
        kind="full",
        parent_id=None,
        parent_date=None,
        chain=ID,
        state="complete",
        snapshot="2000-01-01",
        snapshot_uuid=None,
        parent_uuid=None,
        compression="zstd",
        recipients=(),
        storage_class="local",
        raw_bytes=len(RAW),
        stored_bytes=0,
        volume_count=0,
        created_at="2000-01-01T00:00:00+00:00",
        completed_at=None,
    )


def stored(tmp_path: Path, raw: bytes = PUNCHED) -> tuple[LocalStorage, list[Located]]:
    """``raw`` as a backup's volumes of ``VOLUME`` bytes in a local archive."""
    storage = LocalStorage(tmp_path / "archive")
    codec = Codec("zstd", 1, (), None)
    backup = row()

    def store(index: int, data: Readable) -> Stored:
        return storage.put_stream(f"data/{ID}/vol-{index:05d}.btrfs.zst", data)

    volumes = encode_stream(io.BytesIO(raw), codec, VOLUME, store)
    return storage, [Located(backup, v, f"data/{ID}/{v.name}") for v in volumes]


def entry(path: str, kind: str, mode: int, **kw: object) -> Entry:
    fields: dict[str, object] = {
        "uid": 0,
        "gid": 0,
        "size": 0,
        "atime_ns": T0 + 1_000,
        "mtime_ns": T0 + 2_000,
        "inode": hash(path) & 0xFFFFFFF,
    }
    fields.update(kw)
    return Entry(path=path, kind=kind, mode=mode, **fields)  # type: ignore[arg-type]


def piece(offset: int, length: int, stream_offset: int) -> Piece:
    return Piece(offset, length, ID, stream_offset)


#: A file of 1 MiB: 100,000 stream bytes across two volumes at 8 KiB, a hole, 3 blocks at
#: 512 KiB with a whole zero block in their middle (zeros in the stream: a punched hole sent
#: as zeros), 4 KiB of allocated zeros, and a hole to its end.
BIG_PIECES = (
    piece(BLOCK * 2, 100_000, 10_000),
    piece(512 * 1024, 3 * BLOCK, 200_000),
    Piece(768 * 1024, BLOCK, None),
)


def day_entries() -> list[Entry]:
    return [
        entry("", "dir", stat.S_IFDIR | 0o755, uid=1, gid=2),
        entry("d", "dir", stat.S_IFDIR | 0o500, uid=1234, gid=5678, xattrs=((b"user.dir", b"d"),)),
        entry(
            "d/big",
            "file",
            stat.S_IFREG | 0o4755,
            uid=1234,
            gid=5678,
            size=1024 * 1024,
            inode=7,
            pieces=BIG_PIECES,
            xattrs=((b"user.a", b"1"), (b"trusted.t", b"2")),
        ),
        entry("d/link-to-big", "file", stat.S_IFREG | 0o4755, size=1024 * 1024, inode=7),
        entry("d/empty", "file", stat.S_IFREG | 0o600, mtime_ns=T0 - 5 * 10**17),
        entry("sym", "symlink", stat.S_IFLNK | 0o777, target="../../../etc/passwd", uid=42),
        entry("fifo", "fifo", stat.S_IFIFO | 0o640),
        entry("sock", "socket", stat.S_IFSOCK | 0o755),
        entry("null", "chardev", stat.S_IFCHR | 0o666, rdev=os.makedev(1, 3)),
    ]


#: Where ``d/big`` may hold data: its pieces, but not the zero block (holes elsewhere).
BIG_DATA = [
    (BLOCK * 2, BLOCK * 2 + 100_000),
    (512 * 1024, 512 * 1024 + BLOCK),
    (512 * 1024 + 2 * BLOCK, 512 * 1024 + 3 * BLOCK),
    (768 * 1024, 768 * 1024 + BLOCK),
]


def expected_big() -> bytes:
    data = bytearray(1024 * 1024)
    for p in BIG_PIECES:
        if p.backup_id is not None:
            data[p.offset : p.offset + p.length] = PUNCHED[
                p.stream_offset : p.stream_offset + p.length
            ]
    return bytes(data)


def restore(tmp_path: Path, into: Path, entries: list[Entry], raw: bytes = PUNCHED) -> Extractor:
    storage, volumes = stored(tmp_path, raw)
    wants = wanted((e.path, e.pieces) for e in entries if e.kind == "file")
    needed = needed_volumes(volumes, wants)
    root = os.open(into, os.O_RDONLY | os.O_DIRECTORY)
    extractor = Extractor(root)
    try:
        extractor.create(entries)
        fetch(storage, needed, extractor.write, gnupg_home=None)
        extractor.finish()
    finally:
        extractor.close()
        os.close(root)
    return extractor


def data_ranges(path: Path) -> list[tuple[int, int]]:
    """Where the file has data (SEEK_DATA/SEEK_HOLE), block by block."""
    ranges = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, pos))
    finally:
        os.close(fd)
    return ranges


def assert_restored(root: Path) -> None:
    st = root.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 1, 2)
    assert st.st_mtime_ns == T0 + 2_000 and st.st_atime_ns == T0 + 1_000
    d = (root / "d").lstat()
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid, d.st_mtime_ns) == (
        0o500,
        1234,
        5678,
        T0 + 2_000,
    )
    big = root / "d" / "big"
    b = big.lstat()
    # chown before chmod: the set-uid bit survives; the hard link is the same inode.
    assert (stat.S_IMODE(b.st_mode), b.st_uid, b.st_gid, b.st_nlink) == (0o4755, 1234, 5678, 2)
    assert (root / "d" / "link-to-big").lstat().st_ino == b.st_ino
    assert big.read_bytes() == expected_big()
    assert (b.st_atime_ns, b.st_mtime_ns) == (T0 + 1_000, T0 + 2_000)
    assert os.getxattr(big, "user.a") == b"1"
    assert os.getxattr(big, "trusted.t") == b"2"
    assert os.getxattr(root / "d", "user.dir") == b"d"
    # Holes stay holes, and the zero block becomes one.
    for start, end in data_ranges(big):
        assert any(lo <= start and end <= -(-hi // BLOCK) * BLOCK for lo, hi in BIG_DATA), (
            start,
            end,
        )
    assert (root / "d" / "empty").stat().st_mtime_ns == T0 - 5 * 10**17
    assert os.readlink(root / "sym") == "../../../etc/passwd"
    assert (root / "sym").lstat().st_uid == 42
    assert stat.S_ISFIFO((root / "fifo").lstat().st_mode)
    assert stat.S_IMODE((root / "fifo").lstat().st_mode) == 0o640
    assert stat.S_ISSOCK((root / "sock").lstat().st_mode)
    null = (root / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)


def test_entries_recreated_on_ext4(tmp_path: Path) -> None:
    into = tmp_path / "into"
    into.mkdir()
    extractor = restore(tmp_path, into, day_entries())
    assert_restored(into)
    assert extractor.refused.lines() == []


def test_entries_recreated_on_tmpfs(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tmpfs", "64m") as into:
        extractor = restore(tmp_path, into, day_entries())
        assert_restored(into)
    # tmpfs holds user.* (since Linux 6.6) and trusted.* (for root).
    assert extractor.refused.lines() == []


def test_an_xattr_the_file_system_refuses_is_a_warning(tmp_path: Path) -> None:
    into = tmp_path / "into"
    into.mkdir()
    entries = [
        entry("", "dir", stat.S_IFDIR | 0o755),
        entry("f", "file", stat.S_IFREG | 0o644, xattrs=((b"unknownns.x", b"v"),)),
    ]
    extractor = restore(tmp_path, into, entries)
    [line] = extractor.refused.lines()
    assert "refused xattr unknownns.x on 1 entry" in line


def test_only_the_volumes_holding_pieces_are_selected(tmp_path: Path) -> None:
    _, volumes = stored(tmp_path)
    assert len(volumes) == 5  # 300,000 bytes in volumes of 65,536
    # 10,000..110,000 spans volumes 0 and 1; 200,000.. is in volume 3.
    wants = wanted([("d/big", BIG_PIECES)])
    needed = needed_volumes(volumes, wants)
    assert [n.volume.index for n in needed] == [0, 1, 3]
    assert [len(n.wants) for n in needed] == [1, 1, 1]
    assert needed_volumes(volumes, []) == []
    beyond = Wanted("x", piece(0, 10, len(RAW) - 5))
    with pytest.raises(FileIndexError, match="its volumes do not hold"):
        needed_volumes(volumes, [beyond])
    elsewhere = Wanted("x", replace(piece(0, 10, 0), backup_id="2000-01-02-inc-abcdef"))
    with pytest.raises(FileIndexError, match="not in the chain"):
        needed_volumes(volumes, [elsewhere])


def test_a_damaged_volume_fails_the_fetch(tmp_path: Path) -> None:
    storage, volumes = stored(tmp_path)
    damaged = replace(volumes[1], volume=replace(volumes[1].volume, raw_sha256="0" * 64))
    wants = wanted([("f", (piece(0, 100_000, 10_000),))])
    needed = [VolumeWants(volumes[0], wants), VolumeWants(damaged, wants)]
    with pytest.raises(OperationalError, match=r"volume 1 .*decoded bytes differ"):
        fetch(storage, needed, lambda *_: None, gnupg_home=None)


@pytest.mark.parametrize("bad", ["..", "a/../b", "/abs", "a//b", "a/", ".", "a/\0b"])
def test_names_that_are_not_plain_paths_are_refused(bad: str) -> None:
    with pytest.raises(FileIndexError, match="not a plain relative path"):
        components(bad)


def test_a_restored_symlink_never_redirects_a_later_write(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    into = tmp_path / "into"
    into.mkdir()
    entries = [
        entry("", "dir", stat.S_IFDIR | 0o755),
        entry("evil", "symlink", stat.S_IFLNK | 0o777, target=str(outside)),
        entry("evil/f", "file", stat.S_IFREG | 0o644, size=10, pieces=(piece(0, 10, 0),)),
    ]
    with pytest.raises(OperationalError, match="cannot create 'evil/f'"):
        restore(tmp_path, into, entries)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        # A time's nanoseconds are a u32: seconds at the i64 limit carry past time_t.
        ({"mtime_ns": (2**63 - 1) * 10**9 + 4_294_967_295}, "the times"),
        ({"uid": 2**32}, "the owner"),
        ({"size": 2**64 + 1}, "a size of"),
        ({"pieces": (piece(2**63 - 10, 20, 0),)}, "a size of"),
        ({"xattrs": ((b"user." + b"x" * 251, b"v"),)}, "an xattr named"),
    ],
)
def test_entries_no_system_call_takes_are_refused_before_anything_is_made(
    tmp_path: Path, bad: dict[str, object], problem: str
) -> None:
    hostile = entry("f", "file", stat.S_IFREG | 0o644, **bad)
    with pytest.raises(FileIndexError, match=f"gives 'f' {problem}.*damaged or forged"):
        check_entries([entry("", "dir", stat.S_IFDIR | 0o755), hostile])
    with pytest.raises(FileIndexError, match="a symlink with no target"):
        check_entries([entry("s", "symlink", stat.S_IFLNK | 0o777, target="")])
    with pytest.raises(FileIndexError, match="a name of 256 bytes"):
        check_entries([entry("d/" + "é" * 128, "dir", stat.S_IFDIR | 0o755)])


def test_a_tree_deeper_than_the_recursion_limit_is_recreated(tmp_path: Path) -> None:
    # 2,000 levels of one-letter names: a 3,999-byte path, which btrfs holds and sends.
    depth = 2000
    paths = ["/".join("d" * depth)[: 2 * n + 1] for n in range(depth)]
    entries = [entry("", "dir", stat.S_IFDIR | 0o755)]
    entries += [entry(p, "dir", stat.S_IFDIR | 0o755, mtime_ns=T0 + n) for n, p in enumerate(paths)]
    entries.append(entry(paths[-1] + "/f", "file", stat.S_IFREG | 0o600, size=3))
    into = tmp_path / "into"
    into.mkdir()
    try:
        restore(tmp_path, into, entries)
        fd = os.open(into, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(depth):
                fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
                os.close(parent)
            assert os.stat("f", dir_fd=fd).st_size == 3
        finally:
            os.close(fd)
        assert (into / "d").stat().st_mtime_ns == T0
    finally:
        # Too deep for shutil.rmtree (recursive, as pytest's own clean-up of tmp_path is).
        subprocess.run(["rm", "-rf", "--", str(into)], check=True)

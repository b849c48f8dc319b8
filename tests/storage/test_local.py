"""The local directory backend: what it does beyond the contract (``test_contract.py``):
atomic, private files; no symlink followed; a full disk; a write killed halfway; and the
bounded reads every backend fills its writes with (``storage/common.py``)."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrsendd.config import PipelineConfig, StorageConfig
from btrsendd.errors import StorageError
from btrsendd.storage import open_storage
from btrsendd.storage.common import READ_CHUNK, read_block
from btrsendd.storage.local.directory import TEMP_PREFIX, LocalStorage
from tests.fixtures.btrfs import mounted_tmpfs
from tests.storage.helpers import Dribble

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "archive")


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_files_and_directories_are_private(store: LocalStorage) -> None:
    old = os.umask(0)  # the backend must not rely on the umask
    try:
        store.put_bytes("a/b/c", b"x")
    finally:
        os.umask(old)
    for path in (store.root, store.root / "a", store.root / "a/b"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((store.root / "a/b/c").stat().st_mode) == 0o600


def test_failed_stream_leaves_old_object_and_no_temp(store: LocalStorage) -> None:
    store.put_bytes("k/obj", b"old")
    with pytest.raises(StorageError, match="simulated pipeline failure"):
        store.put_stream("k/obj", Dribble(os.urandom(100_000), fail_after=50_000))
    assert store.get_bytes("k/obj") == b"old"
    assert all_files(store.root) == ["k/obj"]


def test_kill_mid_write_leaves_only_a_hidden_temp_file(store: LocalStorage) -> None:
    """kill -9 during a write: no object under the final name, and list() shows nothing."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from btrsendd.storage.local.directory import LocalStorage

        class Stalls:
            sent = 0
            def read(self, size=-1):
                if self.sent >= 3:
                    time.sleep(600)
                self.sent += 1
                return b"x" * {READ_CHUNK}

        LocalStorage(Path({str(store.root)!r})).put_stream("src/vol", Stalls())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while not any(
            p.stat().st_size >= 3 * READ_CHUNK for p in store.root.glob(f"src/{TEMP_PREFIX}*")
        ):
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never wrote its temp file"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (store.root / "src/vol").exists()
    assert [p.name.startswith(TEMP_PREFIX) for p in (store.root / "src").iterdir()] == [True]
    assert list(store.list("")) == []


def test_listing_hides_temporary_files_and_shows_files_as_standard(store: LocalStorage) -> None:
    for key in ["h/s/2024-a/v1", "h/t/v1"]:
        store.put_bytes(key, key.encode())
    (store.root / "h/s/2024-a" / f"{TEMP_PREFIX}v3-1234").write_bytes(b"partial")
    assert [o.key for o in store.list("h/s/")] == ["h/s/2024-a/v1"]
    infos = list(store.list("h/t/"))
    assert [(i.key, i.size, i.storage_class) for i in infos] == [("h/t/v1", 6, "STANDARD")]


def test_list_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert list(LocalStorage(tmp_path / "never-created").list("")) == []


def test_delete_prunes_empty_directories(store: LocalStorage) -> None:
    store.put_bytes("h/s/b1/v0", b"0")
    store.put_bytes("h/s/b1/v1", b"1")
    store.put_bytes("h/s/b2/v0", b"2")
    store.delete(["h/s/b1/v0", "h/s/b1/v1", "h/s/b1/never-existed"])
    assert all_files(store.root) == ["h/s/b2/v0"]
    assert not (store.root / "h/s/b1").exists()
    store.delete(["h/s/b2/v0"])
    assert store.root.is_dir() and not any(store.root.iterdir())


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end: a disk that fills up on demand."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with mounted_tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


def test_full_disk_names_the_path_and_leaves_nothing(tiny_fs: Path) -> None:
    store = LocalStorage(tiny_fs / "archive")
    with pytest.raises(StorageError) as err:
        store.put_stream("h/s/vol", io.BytesIO(os.urandom(3 * 1024 * 1024)))
    message = str(err.value)
    assert "disk is full" in message and str(tiny_fs / "archive/h/s/vol") in message
    assert "\n" not in message
    assert all_files(tiny_fs) == []


def test_read_block_fills_blocks_from_short_reads() -> None:
    data = os.urandom(50_000)
    reader = Dribble(data, step=333)
    blocks = [read_block(reader, 20_000) for _ in range(4)]
    assert [len(b) for b in blocks] == [20_000, 20_000, 10_000, 0]
    assert b"".join(blocks) == data


def test_open_storage_builds_a_directory(tmp_path: Path) -> None:
    local = open_storage(StorageConfig(backend="local", path=tmp_path), PipelineConfig())
    assert isinstance(local, LocalStorage) and local.root == tmp_path


def test_only_regular_files_are_objects(store: LocalStorage, tmp_path: Path) -> None:
    """A FIFO, a symlink or a directory where an object should be: listed as nothing, read
    as an error at once (opening a FIFO for reading would wait for a writer forever)."""
    store.put_bytes("s/b/manifest.json", b"{}")
    os.mkfifo(store.root / "s/b/fifo")
    (tmp_path / "secret").write_bytes(b"root's")
    (store.root / "s/b/link").symlink_to(tmp_path / "secret")
    assert [o.key for o in store.list("s/")] == ["s/b/manifest.json"]
    for key in ("s/b/fifo", "s/b/link"):
        with pytest.raises(StorageError, match=r"not a regular file|symlink"):
            store.get_bytes(key)
    store.delete(["s/b/link"])
    assert (tmp_path / "secret").read_bytes() == b"root's"


def test_symlinked_directories_are_not_followed(store: LocalStorage, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "vol").write_bytes(b"someone's")
    store.put_bytes("s/b/vol", b"ours")
    (store.root / "s/c").symlink_to(elsewhere)
    assert [o.key for o in store.list("s/")] == ["s/b/vol"]
    assert list(store.list("s/c/")) == []
    store.delete(["s/c/vol"])
    with pytest.raises(StorageError, match="symlink"):
        store.put_bytes("s/c/vol", b"ours")
    with pytest.raises(StorageError, match="no object"):
        store.get_bytes("s/c/vol")
    assert (elsewhere / "vol").read_bytes() == b"someone's"

"""The benchmark's world: filesystems, the dataset and its snapshots, a key pair, configs.

Built with the test suite's own helpers (``loop_btrfs``, ``generated_key``), so a benchmark
filesystem and keyring are made and torn down exactly as the tests' are.  Everything written
by the measured commands (bare pipelines' output files, btrsendd's archives and state) goes
to a private tmpfs, and so does the btrfs that restores receive into: both sides then write
to memory, and neither disk speed nor btrsendd's ``fsync`` of each volume (the local
backend's durability, which a shell redirect skips) decides a comparison of pipelines.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench import dataset
from bench.dataset import GiB, MiB
from tests.fixtures.btrfs import loop_btrfs, mounted_tmpfs
from tests.fixtures.gpg import GpgKey, generated_key

#: The dataset's two days: a full backup of the first, an incremental of the second.  Both
#: are backup days of btrsendd's default schedule (1st, 7th, ...), so ``backup --date`` on a
#: fresh state plans a full backup for the first and an incremental from it for the second.
FULL_DAY = date(2024, 1, 1)
INCREMENTAL_DAY = date(2024, 1, 7)
SOURCE = "data"


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def send_size(*argv: str) -> int:
    """The length of a send stream, by reading it once (which also warms the page cache)."""
    with subprocess.Popen(["btrfs", "-q", "send", *argv], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        size = 0
        while chunk := proc.stdout.read(MiB):
            size += len(chunk)
    if proc.returncode != 0:
        raise RuntimeError(f"btrfs send {' '.join(argv)} failed with {proc.returncode}")
    return size


@dataclass(frozen=True)
class World:
    work: Path
    #: The source btrfs: ``data`` (the live subvolume) and ``snapshots/<day>``.
    source_fs: Path
    #: An empty btrfs that restores receive into.
    target_fs: Path
    #: tmpfs for everything the measured commands write.
    scratch: Path
    key: GpgKey
    dataset: dataset.DatasetInfo
    #: Raw send-stream bytes of the full and the incremental backup.
    full_bytes: int
    incremental_bytes: int

    @property
    def source(self) -> Path:
        return self.source_fs / SOURCE

    @property
    def snapshots(self) -> Path:
        return self.source_fs / "snapshots"

    def snapshot(self, day: date) -> Path:
        return self.snapshots / day.isoformat()

    def fresh_dir(self, name: str) -> Path:
        """An empty directory on the tmpfs (what a previous run left there is deleted)."""
        path = self.scratch / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def config(
        self,
        home: Path,
        *,
        compression: str,
        storage: str | None = None,
        encrypt: bool = True,
        extra_pipeline: str = "",
    ) -> Path:
        """A btrsendd config whose state (and, by default, local archive) live in ``home``."""
        if storage is None:
            storage = f'backend = "local"\npath = "{home / "archive"}"'
        if encrypt:
            encryption = (
                f'mode = "gpg"\nrecipients = ["{self.key.fingerprint}"]\n'
                f'gnupg_home = "{self.key.public_home}"'
            )
        else:
            encryption = 'mode = "none"'
        path = home / "btrsendd.toml"
        path.write_text(
            textwrap.dedent("""\
                state_dir = "{state}"
                [snapshots]
                keep_days = 3650
                [pipeline]
                compression = "{compression}"
                {extra_pipeline}
                [encryption]
                {encryption}
                [storage]
                {storage}
                [[sources]]
                name = "{source}"
                path = "{path}"
                snapshot_dir = "{snapshots}"
                """).format(
                state=home / "state",
                compression=compression,
                extra_pipeline=extra_pipeline,
                encryption=encryption,
                storage=storage,
                source=SOURCE,
                path=self.source,
                snapshots=self.snapshots,
            )
        )
        path.chmod(0o600)
        return path


@contextlib.contextmanager
def build(
    size: int, seed: int, workdir: Path | None, say: Callable[[str], None]
) -> Iterator[World]:
    """Make the world for a dataset of ``size`` bytes; tear everything down afterwards."""
    work = Path(tempfile.mkdtemp(prefix="btrsendd-bench-", dir=workdir))
    try:
        with contextlib.ExitStack() as stack:
            # Room for the data (sparse images count once), the changed day, and metadata.
            fs_size = f"{(size * 3 // 2 + 2 * GiB) // MiB}M"
            source_fs = stack.enter_context(loop_btrfs(work, "source", fs_size))
            scratch = stack.enter_context(mounted_tmpfs(work / "scratch", str(6 * size + 6 * GiB)))
            # Restores write into memory too: the target image lives on the tmpfs.
            target_fs = stack.enter_context(loop_btrfs(scratch, "target", fs_size))
            key = stack.enter_context(generated_key(work / "gnupg", "bench <bench@invalid>"))
            source, snapshots = source_fs / SOURCE, source_fs / "snapshots"
            full, incremental = snapshots / str(FULL_DAY), snapshots / str(INCREMENTAL_DAY)
            _run("btrfs", "subvolume", "create", str(source))
            snapshots.mkdir()
            say(f"building a {size / GiB:g} GiB dataset from seed {seed}")
            info = dataset.build(source, size, seed)
            _run("btrfs", "subvolume", "snapshot", "-r", str(source), str(full))
            dataset.change_day(source, size, seed)
            _run("btrfs", "subvolume", "snapshot", "-r", str(source), str(incremental))
            _run("sync")
            yield World(
                work=work,
                source_fs=source_fs,
                target_fs=target_fs,
                scratch=scratch,
                key=key,
                dataset=info,
                full_bytes=send_size(str(full)),
                incremental_bytes=send_size("-p", str(full), str(incremental)),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

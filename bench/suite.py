"""The measurements: each case is one command, run N times, alternating with the others.

Cases of one group run in turn within a round, and every other round in reverse order, so a
slow spell of the machine (other jobs, writeback, the btrfs cleaner) lands on all of them
alike instead of on whichever ran last.  Every btrsendd run gets a fresh state directory and
archive and runs the real command line, as a user would.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from shlex import quote

from bench import measure
from bench.dataset import GiB, MiB
from bench.measure import Sample
from bench.world import FULL_DAY, INCREMENTAL_DAY, SOURCE, World
from btrsendd.pipeline.sendindex import StreamIndexer
from btrsendd.pipeline.sendstream import StreamChecker

BTRSENDD = str(Path(sys.executable).with_name("btrsendd"))

#: The compressor commands btrsendd itself runs (``codec._compression_stage``), so the
#: bare pipeline does exactly the same compression work.
COMPRESS = {"gzip": "pigz -c -n -6", "zstd": "zstd -T0 -3 -q -c"}
DECOMPRESS = {"gzip": "pigz -dc", "zstd": "zstd -dc -q"}

#: btrsend's pipeline: gzip, then gpg with its default compression (zlib) on top.  Level 4
#: as the benchmark's target states it; btrsend's README says 7, which is slower, so 4 is the
#: stricter baseline for "zstd at least 3.5 x btrsend".
BTRSEND_COMPRESS = "gzip -4 -c"

Step = Callable[[], None]

#: The group of the checker's own runs, which the report also sets against the backups.
STREAM_CHECK = "stream check"
#: The group of the file indexer's own runs.
FILE_INDEX = "file index"


@dataclass
class Case:
    """One measured configuration and its samples."""

    group: str
    name: str
    #: What runs, for the report.
    command: str
    #: Raw send-stream bytes one run moves: the base of MiB/s.
    raw_bytes: int
    #: The name of the bare case in the same group this one is compared with.
    baseline: str | None = None
    #: The per-connection rate cap (bytes/s) the case ran behind, if any: the report gives
    #: its throughput as a multiple of it.
    cap: int | None = None
    samples: list[Sample] = field(default_factory=list)


class Suite:
    """All cases of one benchmark run, in the order the report shows them."""

    def __init__(self, world: World, runs: int, seed: int, say: Callable[[str], None]) -> None:
        self.world = world
        self.runs = runs
        self.seed = seed
        self.say = say
        self.cases: list[Case] = []
        #: Each stream's file index: its raw size and its size as zstd -3 stores it.
        self.index_bytes: dict[str, tuple[int, int]] = {}

    def add_case(
        self,
        group: str,
        name: str,
        command: str,
        raw_bytes: int,
        baseline: str | None = None,
        cap: int | None = None,
    ) -> Case:
        case = Case(group, name, command, raw_bytes, baseline, cap)
        self.cases.append(case)
        return case

    def alternate(self, steps: Sequence[Step]) -> None:
        """Run every step ``runs`` times, in turn, reversing the order every other round."""
        for round_ in range(self.runs):
            for step in steps if round_ % 2 == 0 else reversed(steps):
                step()

    def log_path(self, case: Case) -> Path:
        name = re.sub(r"[^A-Za-z0-9]+", "-", f"{case.group}-{case.name}")
        return self.world.work / "logs" / f"{name}.log"

    def record(self, case: Case, sample: Sample) -> None:
        case.samples.append(sample)
        rss = "" if sample.peak_rss is None else f", peak RSS {sample.peak_rss / MiB:.0f} MiB"
        self.say(
            f"  {case.group} / {case.name}: {sample.seconds:.2f} s "
            f"({case.raw_bytes / sample.seconds / MiB:.0f} MiB/s), "
            f"CPU {sample.cpu_seconds:.2f} s{rss}"
        )

    # -- commands ----------------------------------------------------------------------------

    def _encrypt(self, *, gpg_compresses: bool = False) -> str:
        """gpg as btrsendd runs it (``gpg.encrypt_stage``), or as btrsend did."""
        key = self.world.key
        compress = "" if gpg_compresses else " --compress-algo none"
        return (
            f"gpg --batch --no-tty --quiet --homedir {quote(str(key.public_home))} "
            f"--trust-model always{compress} --encrypt --recipient {key.fingerprint} --output -"
        )

    def _decrypt(self) -> str:
        """gpg as btrsendd runs it to restore (``gpg.decrypt_stage``)."""
        return (
            f"gpg --batch --no-tty --quiet --homedir {quote(str(self.world.key.secret_home))} "
            "--pinentry-mode loopback --decrypt --output -"
        )

    def _send_argv(self, kind: str) -> list[str]:
        full = str(self.world.snapshot(FULL_DAY))
        if kind == "full":
            return ["btrfs", "-q", "send", full]
        return ["btrfs", "-q", "send", "-p", full, str(self.world.snapshot(INCREMENTAL_DAY))]

    def _send(self, kind: str) -> str:
        return " ".join(quote(arg) for arg in self._send_argv(kind))

    def btrsendd(self, config: Path, *args: str) -> list[str]:
        return [BTRSENDD, "--config", str(config), "--log-format", "json", *args]

    def stream(self, size: int, kind: str) -> list[str]:
        return [sys.executable, "-m", "bench.stream", str(size), kind, str(self.seed)]

    # -- backup ------------------------------------------------------------------------------

    def backups(self) -> None:
        """Full and incremental backups: bare pipelines, btrsendd, and btrsend's pipeline."""
        sizes = {"full": self.world.full_bytes, "incremental": self.world.incremental_bytes}
        days = {"full": FULL_DAY, "incremental": INCREMENTAL_DAY}
        steps: list[Step] = []
        for compression, compress in COMPRESS.items():
            bare, ours = {}, {}
            for kind, raw_bytes in sizes.items():
                bare[kind] = self.add_case(
                    f"backup {kind}",
                    f"bare {compression}",
                    f"btrfs send | {compress} | gpg --compress-algo none --encrypt > FILE",
                    raw_bytes,
                )
                ours[kind] = self.add_case(
                    f"backup {kind}",
                    f"btrsendd {compression}",
                    f"btrsendd backup --date {days[kind]}, local backend, fresh state",
                    raw_bytes,
                    baseline=bare[kind].name,
                )
            steps.append(self._bare_backup(compression, bare))
            steps.append(self._btrsendd_backup(compression, ours, days))
        ancestor = self.add_case(
            "backup full",
            "btrsend gzip -4 | gpg",
            f"btrfs send | {BTRSEND_COMPRESS} | gpg --encrypt > FILE (gpg compresses as well)",
            sizes["full"],
        )
        steps.append(self._btrsend_backup(ancestor))
        self.alternate(steps)

    def _bare_backup(self, compression: str, cases: dict[str, Case]) -> Step:
        def step() -> None:
            out = self.world.fresh_dir(f"bare-{compression}")
            for kind, case in cases.items():
                pipeline = f"{self._send(kind)} | {COMPRESS[compression]} | {self._encrypt()}"
                target = quote(str(out / f"{kind}.gpg"))
                self.record(case, measure.shell(f"{pipeline} > {target}", log=self.log_path(case)))

        return step

    def _btrsendd_backup(
        self, compression: str, cases: dict[str, Case], days: dict[str, date]
    ) -> Step:
        def step() -> None:
            home = self.world.fresh_dir(f"btrsendd-{compression}")
            config = self.world.config(home, compression=compression)
            for kind, case in cases.items():
                argv = self.btrsendd(config, "backup", "--date", days[kind].isoformat())
                self.record(case, measure.run(argv, log=self.log_path(case), watch_rss=True))

        return step

    def _btrsend_backup(self, case: Case) -> Step:
        def step() -> None:
            out = self.world.fresh_dir("btrsend")
            pipeline = (
                f"{self._send('full')} | {BTRSEND_COMPRESS} | {self._encrypt(gpg_compresses=True)}"
            )
            target = quote(str(out / "full.gpg"))
            self.record(case, measure.shell(f"{pipeline} > {target}", log=self.log_path(case)))

        return step

    # -- the stream check and the file index ---------------------------------------------

    def stream_checks(self) -> None:
        """btrsendd's send-stream checker and its file indexer alone, on the benchmark's own
        full and incremental streams (saved to the tmpfs first): their throughput, and for the
        report their share of a backup's time (in a backup both run on the thread that feeds
        the compressor), and how large each stream's index is, raw and as zstd stores it."""
        steps: list[Step] = []
        streams = {"full": self.world.full_bytes, "incremental": self.world.incremental_bytes}
        for kind, raw_bytes in streams.items():
            path = self.world.scratch / f"{kind}.stream"
            with path.open("wb") as out:
                subprocess.run(self._send_argv(kind), stdout=out, check=True)
            check = self.add_case(
                STREAM_CHECK,
                f"{kind} stream",
                "sendstream.StreamChecker.feed, 1 MiB at a time, in-process (reads not timed)",
                raw_bytes,
            )
            index = self.add_case(
                FILE_INDEX,
                f"{kind} stream",
                "sendindex.StreamIndexer.feed, 1 MiB at a time, in-process (reads not timed)",
                raw_bytes,
            )
            steps += [self._fed(check, path, StreamChecker), self._fed(index, path, None)]
        try:
            self.alternate(steps)
        finally:
            for kind in streams:
                (self.world.scratch / f"{kind}.stream").unlink(missing_ok=True)

    def _fed(self, case: Case, path: Path, checker: type[StreamChecker] | None) -> Step:
        def step() -> None:
            if checker is not None:
                self.record(case, measure.fed_in_process(path, checker()))
                return
            index = io.BytesIO()
            self.record(case, measure.fed_in_process(path, StreamIndexer(index)))
            stored = subprocess.run(
                ["zstd", "-3", "-q", "-c"], input=index.getvalue(), capture_output=True, check=True
            ).stdout
            self.index_bytes[case.name.removesuffix(" stream")] = (
                len(index.getvalue()),
                len(stored),
            )

        return step

    # -- restore -----------------------------------------------------------------------------

    def restores(self) -> None:
        """The full backup back onto btrfs, from what the last backup round stored."""
        self._warm_gpg_agent()
        steps: list[Step] = []
        for compression, decompress in DECOMPRESS.items():
            bare = self.add_case(
                "restore full",
                f"bare {compression}",
                f"cat FILE | gpg --decrypt | {decompress} | btrfs receive -e DIR",
                self.world.full_bytes,
            )
            ours = self.add_case(
                "restore full",
                f"btrsendd {compression}",
                f"btrsendd restore --date {FULL_DAY} --target DIR --yes",
                self.world.full_bytes,
                baseline=bare.name,
            )
            steps.append(self.restore_step(bare, self._bare_restore(compression, bare)))
            steps.append(self.restore_step(ours, self._btrsendd_restore(compression, ours)))
        self.alternate(steps)

    def _bare_restore(self, compression: str, case: Case) -> Callable[[Path], Sample]:
        stored = quote(str(self.world.scratch / f"bare-{compression}" / "full.gpg"))
        pipeline = (
            f"cat {stored} | {self._decrypt()} | {DECOMPRESS[compression]} | btrfs receive -e"
        )
        return lambda target: measure.shell(
            f"{pipeline} {quote(str(target))}", log=self.log_path(case)
        )

    def _btrsendd_restore(self, compression: str, case: Case) -> Callable[[Path], Sample]:
        config = self.world.scratch / f"btrsendd-{compression}" / "btrsendd.toml"
        secret = str(self.world.key.secret_home)
        day = FULL_DAY.isoformat()

        def restore(target: Path) -> Sample:
            argv = self.btrsendd(config, "restore", "--source", SOURCE, "--date", day)
            argv += ["--target", str(target), "--yes", "--gnupg-home", secret]
            return measure.run(argv, log=self.log_path(case), watch_rss=True)

        return restore

    def restore_step(self, case: Case, restore: Callable[[Path], Sample]) -> Step:
        def step() -> None:
            target = self.world.target_fs / "restore"
            target.mkdir()
            try:
                self.record(case, restore(target))
            finally:
                self._clear(target)

        return step

    def _clear(self, target: Path) -> None:
        """Delete what a restore received and wait until btrfs has reclaimed it, so that its
        cleaner does not run during the next measurement.  ``-C`` commits the deletion, which
        wakes the cleaner at once instead of at the next periodic commit (30 s)."""
        for entry in target.iterdir():
            subprocess.run(["btrfs", "subvolume", "delete", "-C", str(entry)], capture_output=True)
        target.rmdir()
        subprocess.run(
            ["btrfs", "subvolume", "sync", str(self.world.target_fs)], capture_output=True
        )

    def _warm_gpg_agent(self) -> None:
        """Start the restore keyring's gpg-agent now rather than inside the first measured run."""
        subprocess.run(
            f"echo probe | {self._encrypt()} | {self._decrypt()}",
            shell=True,
            capture_output=True,
            check=True,
        )

    # -- memory ------------------------------------------------------------------------------

    def memory(self, sizes: Sequence[int]) -> None:
        """btrsendd's peak RSS as the stream grows: ``backup-stdin`` fed a synthetic stream
        (``bench.stream``, kind ``sparse``), zstd, gpg, local backend; one run per size."""
        for size in sizes:
            case = self.add_case(
                "memory",
                f"{size / GiB:g} GiB stream",
                "python -m bench.stream SIZE sparse | btrsendd backup-stdin (zstd, gpg, local)",
                size,
            )
            home = self.world.fresh_dir("btrsendd-memory")
            config = self.world.config(home, compression="zstd")
            argv = self.btrsendd(
                config, "backup-stdin", "--source", SOURCE, "--date", str(FULL_DAY)
            )
            self.record(
                case, measure.run_fed(self.stream(size, "sparse"), argv, log=self.log_path(case))
            )

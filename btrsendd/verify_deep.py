"""``verify --deep``: the newest backup of a source restored into a scratch btrfs and compared
with its local snapshot.

The cheap checks (``verify.py``) say every stored object is there with its recorded size and
checksum; only a restore says the chain still decodes, receives and equals what was backed up.
It costs a retrieval, so its plan is announced before anything is spent.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from btrsendd import snapshots
from btrsendd.config import SourceConfig
from btrsendd.errors import BtrsenddError, OperationalError
from btrsendd.loopfs import loop_btrfs
from btrsendd.pricing import Prices
from btrsendd.repository import Repository
from btrsendd.restore import RestoreJob, resolve_chain
from btrsendd.restore_plan import RestorePlan
from btrsendd.storage.base import Tier
from btrsendd.treediff import diff_trees
from btrsendd.units import human_bytes
from btrsendd.verify import Report
from btrsendd.workdir import Target

#: ``--deep`` thaws with the cheapest tier: a check is rarely urgent.
DEEP_TIER: Tier = "Bulk"


@contextlib.contextmanager
def scratch_btrfs(parent: Path, size: int) -> Iterator[Path]:
    """A throwaway btrfs in a temporary directory under ``parent``; gone afterwards."""
    work = Path(tempfile.mkdtemp(prefix="verify-scratch-", dir=parent))
    try:
        with loop_btrfs(work / "fs.img", work / "mnt", size) as mnt:
            yield mnt
    finally:
        shutil.rmtree(work, ignore_errors=True)


def deep_check(
    repo: Repository,
    src: SourceConfig,
    prices: Prices,
    report: Report,
    gnupg_home: Path | None,
    announce: Callable[[RestorePlan], None],
    rate_limit: int | None = None,
) -> None:
    """Restore the newest backup of ``src`` into a scratch btrfs and compare it (reading at
    most ``rate_limit`` bytes a second).

    ``gnupg_home`` holds the private key (``--gnupg-home``; gpg's default keyring if None).
    ``announce`` is shown what the restore costs (at ``DEEP_TIER``) before anything is spent.
    """
    rows = repo.catalog.backups(src.name)
    if not rows:
        report.notes.append("no backup to restore")
        return
    chain = resolve_chain(repo.catalog, src.name, rows[-1].date)
    newest = chain[-1]
    try:
        job = RestoreJob.prepare(repo, chain, gnupg_home)
    except BtrsenddError as exc:
        report.problems.append(f"deep check of {newest.id} ({newest.date}): {exc}")
        return
    announce(job.plan(prices, DEEP_TIER))
    needed = sum(r.raw_bytes for r in chain)
    free = shutil.disk_usage(repo.config.state_dir).free
    if free < needed:
        raise OperationalError(
            f"verify --deep needs about {human_bytes(needed)} free in "
            f"{repo.config.state_dir} for its scratch filesystem; {human_bytes(free)} is free"
        )
    job.thaw(DEEP_TIER, wait=True)
    # Sparse: the image takes only what is written; room for two chain members at once.
    size = max(2 * needed + 256 * 1024**2, 1024**3)
    with scratch_btrfs(repo.config.state_dir, size) as mnt:
        try:
            with Target.open(mnt, "scratch filesystem") as target:
                restored = job.receive(target, gnupg_home, rate_limit=rate_limit)
        except BtrsenddError as exc:
            report.problems.append(f"deep check: {exc}")
            return
        snap = snapshots.snapshot_of(src.snapshot_dir, newest)
        if snap is None:
            report.notes.append(
                f"restored {newest.date} ({newest.id}), every volume matching its SHA-256; "
                "no local snapshot of that day to compare with"
            )
            return
        local = snap.path
        diff = diff_trees(local, restored)
        if diff:
            report.problems.append(
                f"restored {newest.date} ({newest.id}) differs from the local snapshot "
                f"{local}: {diff.summary()}"
            )
        else:
            report.notes.append(
                f"restored {newest.date} ({newest.id}) equals the local snapshot {local}"
            )

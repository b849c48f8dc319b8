"""Restore: resolve a chain, check what is free to check, thaw, then receive it (``receive.py``).

A day is restored by receiving its chain in order, the full backup first; ``receive.py`` does
that, into a working directory inside the target, checking every volume's SHA-256.

Before anything is spent, restore checks what it can for free: every volume is in storage
with its recorded size (and on S3 its recorded checksum, see ``damage.py``), the keyring
holds a private key the chain can be decrypted with, and the target is a btrfs directory
without that day in it.  Retrievals it requests are recorded in the catalog, so a restore
run again (after ``--no-wait``, Ctrl-C or a reboot) waits for them instead of paying twice.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from btrsendd.catalog import Catalog
from btrsendd.damage import free_damage
from btrsendd.errors import BtrsenddError, OperationalError, UsageError
from btrsendd.layout import Located
from btrsendd.log import get_logger
from btrsendd.model import Backup, RestoreRequest
from btrsendd.names import UnsafeName, check_name
from btrsendd.pipeline import btrfs
from btrsendd.pipeline.gpg import check_private_keys
from btrsendd.pricing import Prices
from btrsendd.receive import Writable, receive_chain
from btrsendd.repository import Repository
from btrsendd.restore_plan import RestorePlan, plan_restore
from btrsendd.storage.base import Thawing, Tier, thawing
from btrsendd.storage.throttle import Throttle
from btrsendd.terminal import status_line
from btrsendd.units import clock
from btrsendd.workdir import Target

#: How long a thawed copy stays readable.  Long enough to download a large chain after a
#: 48-hour Bulk retrieval; the copy is billed as STANDARD storage meanwhile.
RESTORE_DAYS = 7

#: Seconds between polls of objects being thawed, at most (the interval doubles up to it).
#: Thawing takes hours; each poll is one HEAD request per waiting object.
POLL_SECONDS_ENV = "BTRSENDD_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 600.0
FIRST_POLL_SECONDS = 5.0


def resolve_chain(catalog: Catalog, source: str, day: date) -> list[Backup]:
    """The chain that restores ``source`` as of ``day``: full first, the wanted backup last.

    The wanted backup is the newest complete one dated on or before ``day``.
    """
    complete = catalog.backups(source)
    rows = [r for r in complete if r.date <= day]
    if not rows:
        raise UsageError(f"no complete backup of {source!r} dated on or before {day}")
    by_id = {r.id: r for r in complete}
    chain = [rows[-1]]
    while chain[-1].parent_id is not None:
        parent = by_id.get(chain[-1].parent_id)
        if parent is None:
            raise OperationalError(
                f"backup {chain[-1].id} needs parent {chain[-1].parent_id}, which the catalog "
                "lacks; run `btrsendd catalog rebuild --force`"
            )
        chain.append(parent)
    chain.reverse()
    return chain


# -- checks that cost nothing ------------------------------------------------------------


def check_names(volumes: Sequence[Located]) -> None:
    """Every name restore will build a key or a path from must be one of ours.

    The catalog's names came from storage once (a rebuild reads them from manifests); they
    are checked again here, where they are about to become keys and file names.
    """
    for vol in volumes:
        row = vol.backup
        try:
            check_name("source", row.source)
            check_name("backup id", row.id)
            if row.snapshot is not None:
                check_name("snapshot", row.snapshot)
            check_name("volume", vol.volume.name)
        except UnsafeName as exc:
            raise OperationalError(
                f"the catalog's backup {row.id!r} has an unsafe name ({exc}); nothing was "
                "requested: run `btrsendd catalog rebuild --force`"
            ) from None


def check_target(
    target: Target,
    name: str | None,
    writable: Writable | None,
    snapshot_dirs: Sequence[Path] = (),
) -> None:
    """Refuse, before anything is spent, a target the restored day cannot be put into.

    ``snapshot_dirs`` (the configured ones) are refused too: local retention deletes the
    date-named read-only subvolumes it finds there, a restored day among them.  A target
    others can enter is allowed, with a warning: the restored day keeps the permissions it
    had then.
    """
    places = [(target.path, "restore target")]
    if writable is not None:
        places.append((writable.directory.path / writable.name, "--writable"))
    for place, what in places:
        real = Path(os.path.realpath(place))
        for snapshot_dir in snapshot_dirs:
            if real.is_relative_to(os.path.realpath(snapshot_dir)):
                raise UsageError(
                    f"{what} {place} is inside snapshot_dir {snapshot_dir}, where local "
                    "retention would delete the restored day; choose another directory"
                )
    if name is not None and target.has(name):
        what = "a subvolume" if btrfs.is_subvolume(target.path / name) else "an entry"
        raise UsageError(
            f"{target.path} already contains {what} named {name}; delete it or choose another "
            "--target"
        )
    if writable is not None:
        where = writable.directory.path / writable.name
        if writable.directory.has(writable.name):
            raise UsageError(f"--writable {where} already exists; choose a new path")
        if writable.directory.fsid != target.fsid:
            raise UsageError(
                f"--writable {where} must be on the same btrfs filesystem as {target.path}"
            )
    mode = stat.S_IMODE(os.fstat(target.fd).st_mode)
    if mode & 0o011:
        get_logger().warning(
            "restore.target_open",
            path=str(target.path),
            mode=f"{mode:04o}",
            detail="others can enter the target: the restored day keeps the permissions it "
            "had then, so files made private since are readable again; restore into a "
            "directory only root can enter if that matters",
        )


# -- thawing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Survey:
    """Where every volume stands before (or while) waiting for retrievals."""

    readable: list[Located]
    #: Being thawed: requested by an earlier run, or by anyone (the storage says so).
    pending: list[Located]
    to_request: list[Located]
    #: This host's recorded requests for the pending volumes, for messages.
    requests: dict[str, RestoreRequest]

    @property
    def waiting(self) -> list[Located]:
        return self.pending + self.to_request


def survey(
    storage: Thawing,
    catalog: Catalog,
    volumes: Sequence[Located],
    *,
    now: datetime | None = None,
) -> Survey:
    """Ask the storage where each volume stands (a HEAD each on S3: no retrieval cost).

    An archived volume with a request recorded more recently than a thawed copy lives
    (``RESTORE_DAYS`` on S3, a day for a vault's job output) counts as pending, not as one to
    request: its thawed copy cannot have expired yet, so the request is still being worked
    on.  An older request's copy has expired and is requested again.
    """
    now = now or datetime.now(UTC)
    recorded = catalog.restore_requests()
    lifetime = storage.thaw_lifetime(RESTORE_DAYS)
    result = Survey([], [], [], {})
    for vol in volumes:
        try:
            state = storage.thaw_state(vol.key, vol.version)
        except BtrsenddError as exc:
            raise OperationalError(f"{vol.describe()}: {exc}") from None
        request = recorded.get(vol.key)
        if state == "readable":
            result.readable.append(vol)
            continue
        fresh = request is not None and now - request.requested_at < lifetime
        if state == "pending" or fresh:
            result.pending.append(vol)
            if request is not None:
                result.requests[vol.key] = request
        else:
            result.to_request.append(vol)
    return result


def poll_seconds() -> float:
    """The longest pause between polls: ``$BTRSENDD_POLL_SECONDS`` or ten minutes."""
    text = os.environ.get(POLL_SECONDS_ENV)
    if text is None:
        return DEFAULT_POLL_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(f"{POLL_SECONDS_ENV}={text!r} must be a positive number of seconds")
    return value


def _request(storage: Thawing, catalog: Catalog, volumes: Sequence[Located], tier: Tier) -> None:
    for vol in volumes:
        storage.request_thaw(vol.key, tier, RESTORE_DAYS, vol.version)
        # Recorded only once the storage has accepted it; a crash in between is harmless,
        # since the storage itself then reports the object as pending.
        catalog.record_restore_request(vol.key, vol.backup.id, tier)
        get_logger(source=vol.backup.source).info(
            "restore.requested", backup_id=vol.backup.id, volume=vol.index, key=vol.key, tier=tier
        )


def thaw(
    storage: Thawing,
    catalog: Catalog,
    start: Survey,
    *,
    tier: Tier,
    wait: bool,
    max_poll: float,
    label: str = "restore",
) -> bool:
    """Request what ``start`` says needs requesting; with ``wait``, poll until all is readable.

    The first poll comes at once, then they back off from ``FIRST_POLL_SECONDS`` to
    ``max_poll``.  Returns whether every volume is readable (always True with ``wait``).
    While waiting, the terminal's status line (``label: waiting ...``) says for what.
    """
    _request(storage, catalog, start.to_request, tier)
    waiting = start.waiting
    objects = len(start.readable) + len(waiting)
    began = time.monotonic()
    delay = 0.0  # the first check follows at once: some thaws take minutes, or less
    line = status_line()
    try:
        while waiting and wait:
            line.show(
                f"{label}: waiting {clock(time.monotonic() - began)} for {len(waiting)} of "
                f"{objects} object(s) to be restored from cold storage (tier {tier}); next "
                f"check at {datetime.now() + timedelta(seconds=delay):%H:%M:%S}"
            )
            time.sleep(delay)
            delay = min(max(delay * 2, FIRST_POLL_SECONDS), max_poll)
            now = survey(storage, catalog, waiting)
            _request(storage, catalog, now.to_request, tier)
            waiting = now.waiting
            get_logger().info("restore.waiting", pending=len(waiting), next_poll=delay)
    finally:
        line.clear()
    return not waiting


# -- one restore, start to end -------------------------------------------------------------


@dataclass
class RestoreJob:
    """One chain on its way from storage to a target: what ``restore`` and ``verify --deep``
    share, from the free checks to the received subvolume."""

    repo: Repository
    chain: list[Backup]
    volumes: list[Located]
    survey: Survey

    @classmethod
    def prepare(
        cls,
        repo: Repository,
        chain: list[Backup],
        gnupg_home: Path | None,
        volumes: list[Located] | None = None,
    ) -> RestoreJob:
        """Run every check that costs nothing, and survey the volumes' thaw states.

        ``volumes`` are the ones to read, when not all of the chain's (``restore --path``
        reads those holding its paths: ``fileindex/restore_paths.py``).
        """
        volumes = repo.volumes(chain) if volumes is None else volumes
        check_names(volumes)
        # Not rehashed even where reading is free: the receive checks every byte anyway.
        damage = free_damage(repo.storage, volumes, rehash=False)
        if damage:
            more = f" and {len(damage) - 1} more" if len(damage) > 1 else ""
            raise OperationalError(
                f"cannot restore {chain[-1].source} {chain[-1].date}: {damage[0]}{more}; "
                "nothing was requested (run `btrsendd verify` for the whole list)"
            )
        check_private_keys(chain, gnupg_home)
        return cls(repo, chain, volumes, survey(thawing(repo.storage), repo.catalog, volumes))

    def plan(self, prices: Prices, tier: str) -> RestorePlan:
        """What will be read, requested, paid and waited for: shown before anything is."""
        return plan_restore(self.chain, self.volumes, self.survey, prices, tier, RESTORE_DAYS)

    def thaw(self, tier: Tier, *, wait: bool) -> bool:
        return thaw(
            thawing(self.repo.storage),
            self.repo.catalog,
            self.survey,
            tier=tier,
            wait=wait,
            max_poll=poll_seconds(),
            label=f"{self.chain[-1].source} {self.chain[-1].date}",
        )

    def receive(
        self,
        target: Target,
        gnupg_home: Path | None,
        writable: Writable | None = None,
        *,
        rate_limit: int | None = None,
    ) -> Path:
        """Receive the chain into ``target`` (and a writable snapshot at ``writable``),
        reading at most ``rate_limit`` bytes a second; the thawed copies are no longer
        waited for."""
        path = receive_chain(
            self.repo.storage,
            self.repo.catalog,
            self.volumes,
            target,
            state_dir=self.repo.config.state_dir,
            gnupg_home=gnupg_home,
            writable=writable,
            throttle=Throttle(rate_limit),
        )
        self.repo.catalog.forget_restore_requests(v.key for v in self.volumes)
        return path

"""What ``btrsendd status`` reports: what is backed up, what runs next, what it costs, what failed.

The report is the JSON ``status --json`` prints (``cli/status.py`` words it for people).  Two
sources, joined here: the catalog (backups, chains, stored bytes), which is always there,
and the state the daemon publishes in ``<state_dir>/daemon.json`` (what it is doing, the
upload's progress, each source's last error), which is only current while the daemon runs.
Without a daemon, status still answers from the catalog and says "daemon not running"; the
last errors it shows then are the ones the daemon saw before it stopped.

What storing costs per month comes from ``pricing.py``.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Any

from btrsendd import snapshots
from btrsendd.config import Config, SourceConfig
from btrsendd.cron import schedule_trigger
from btrsendd.daemon.state import PublishedState, live_pid, read_state
from btrsendd.errors import BtrsenddError
from btrsendd.interruptions import SourceInterruptions, read_interruptions
from btrsendd.model import Backup
from btrsendd.pricing import monthly_cost
from btrsendd.repository import Repository, open_repository

#: How far ahead ``next backup`` looks for a run on which the planner has a backup due.
_LOOKAHEAD_DAYS = 366


def _next_backup(repo: Repository, source: str, trigger: Any, now: datetime) -> dict[str, Any]:
    """The first scheduled run on whose date the planner has a backup due for ``source``."""
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    checked: set[date] = set()
    while fire is not None and len(checked) < _LOOKAHEAD_DAYS:
        day = fire.date()
        if day not in checked:
            checked.add(day)
            decision = repo.plan(source, day)
            if decision.action != "none":
                return {"at": fire.isoformat(), "action": decision.action}
        # The plan depends only on the date: go straight to the next day's first run.
        midnight = datetime.combine(day + timedelta(days=1), time(), fire.tzinfo)
        fire = trigger.get_next_fire_time(None, midnight)
    return {"at": None, "action": None}


def _after(iso: str | None, than: str) -> bool:
    """Whether the time ``iso`` is later than the time ``than`` (both ISO, with an offset or
    as local time)."""
    try:
        return iso is not None and (
            datetime.fromisoformat(iso).astimezone() > datetime.fromisoformat(than).astimezone()
        )
    except ValueError:
        return False


def _interruptions(
    repo: Repository,
    recorded: SourceInterruptions | None,
    complete: list[Backup],
    running_here: bool,
) -> dict[str, Any]:
    """The source's interrupted cycles: how many, and the last one with what became of it.

    ``state`` is where its backup stands now (``uploading``: the next cycle resumes it;
    ``resuming``: the daemon is at it; ``complete``; ``gone``: discarded), ``resolved``
    whether a backup of the source (``complete``) completed since: it is history then.
    """
    recorded = recorded or SourceInterruptions()
    last = recorded.last
    report: dict[str, Any] = {"by_signal": recorded.by_signal, "by_error": recorded.by_error}
    if last is None:
        return {**report, "last": None}
    state: str | None = None
    if last.backup_id is not None:
        row = repo.catalog.backup(last.backup_id)
        state = "gone" if row is None else row.state
        if state == "uploading" and running_here:
            state = "resuming"
    resolved = any(_after(r.completed_at, last.at) for r in complete)
    return {**report, "last": {**asdict(last), "state": state, "resolved": resolved}}


def _source_report(
    repo: Repository,
    src: SourceConfig,
    published: PublishedState | None,
    running: bool,
    trigger: Any,
    now: datetime,
    recorded: SourceInterruptions | None,
) -> dict[str, Any]:
    """``published``: the daemon's last state, ``running`` whether that daemon still runs;
    ``recorded``: the source's interrupted cycles."""
    config = repo.config
    rows = repo.catalog.backups(src.name)
    last = rows[-1] if rows else None
    chain = [r for r in rows if last is not None and r.chain == last.chain]
    try:
        local: int | None = len(snapshots.list_snapshots(src.snapshot_dir))
        local_error = None
    except BtrsenddError as exc:
        local, local_error = None, str(exc)
    cycle = None if published is None or not running else published.cycle
    running_here = cycle is not None and cycle.source == src.name
    # While the daemon works on this source, its `uploading` row is that work, not a leftover.
    interrupted = [] if running_here else repo.catalog.backups(src.name, states=("uploading",))
    seen = None if published is None else published.sources.get(src.name)
    locks = [r.locked_until for r in rows if r.locked_until is not None]
    deferred = repo.catalog.deferred_deletions(src.name)
    strays = repo.catalog.strays().get(src.name)
    stops = _interruptions(repo, recorded, rows, running_here)
    last_stop = stops["last"]

    def why(backup_id: str) -> dict[str, Any]:
        """When and why ``backup_id`` was interrupted, if that is the one recorded."""
        known = last_stop is not None and last_stop["backup_id"] == backup_id
        return {key: last_stop[key] if known else None for key in ("at", "signal", "reason")}

    return {
        "name": src.name,
        "path": str(src.path),
        "last_backup": None
        if last is None
        else {
            "id": last.id,
            "date": last.date.isoformat(),
            "kind": last.kind,
            "raw_bytes": last.raw_bytes,
            "stored_bytes": last.stored_bytes,
            "completed_at": last.completed_at,
        },
        "next_backup": _next_backup(repo, src.name, trigger, now),
        "chain": None
        if not chain
        else {
            "id": chain[0].chain,
            "length": len(chain),
            "limit": 1 + config.schedule.max_incrementals,
            "first_date": chain[0].date.isoformat(),
            "age_days": (now.date() - chain[0].date).days,
        },
        "local_snapshots": local,
        "local_snapshots_error": local_error,
        "uploading": None
        if cycle is None or not running_here
        else {
            "bytes": cycle.bytes,
            "rate": cycle.rate,
            "total": cycle.total,
            "estimate": cycle.estimate,
            "eta": cycle.eta,
        },
        "interrupted": [
            {"id": r.id, "volumes_stored": r.volume_count, **why(r.id)} for r in interrupted
        ],
        "interruptions": stops,
        "last_run": {
            "at": None if seen is None else seen.last_run_at,
            "result": None if seen is None else seen.last_result,
        },
        "problem": _date_problem(src.name, last, now),
        # The oldest kept backup's lock: until then, nothing kept can be deleted.
        "locked_until": min(locks).isoformat() if locks else None,
        "deferred_deletion": None
        if not deferred
        else {
            "versions": len(deferred),
            "bytes": sum(d.size for d in deferred),
            "until": max(d.until for d in deferred).isoformat(),
        },
        "stray_versions": None
        if not strays or not strays[0]
        else {"versions": strays[0], "bytes": strays[1], "checked_at": strays[2]},
        "last_error": None
        if seen is None or not seen.last_error
        else {"at": seen.last_error_at, "message": seen.last_error},
    }


def _date_problem(source: str, newest: Backup | None, now: datetime) -> str | None:
    """Why no backup can be made while the newest one is dated after today, and the way out.

    Shown from the catalog, not from the daemon's last error: it holds whether or not a
    daemon runs, and for as long as the dates disagree.
    """
    if newest is None or newest.date <= now.date():
        return None
    return (
        f"the newest backup ({newest.date}) is dated after today ({now.date()}): no backup is "
        "made until the clock reaches that day; if that backup is a mistake, remove it with "
        f"`btrsendd forget --source {source} --date {newest.date}`"
    )


def _daemon_report(state: PublishedState | None, pid: int | None) -> dict[str, Any]:
    """The daemon's part of the report: ``state`` as it published it, ``pid`` if it runs."""
    if pid is None or state is None:
        return {
            "running": False,
            "last_seen": None if state is None else state.updated_at,
        }
    return {
        "running": True,
        "pid": pid,
        "state": state.state,
        "status": state.status,
        "started_at": state.started_at,
        "next_run": state.next_run,
        "cycle": None if state.cycle is None else asdict(state.cycle),
    }


def build_report(config: Config, now: datetime) -> dict[str, Any]:
    """Everything ``status`` shows, as the JSON ``status --json`` prints."""
    published = read_state(config.state_dir)
    pid = live_pid(published)
    daemon = _daemon_report(published, pid)
    trigger = schedule_trigger(config)
    if not daemon["running"]:
        upcoming = trigger.get_next_fire_time(None, now)
        daemon["next_run"] = None if upcoming is None else upcoming.isoformat()
    recorded = read_interruptions(config.state_dir)
    with open_repository(config) as repo:
        sources = [
            _source_report(
                repo, src, published, pid is not None, trigger, now, recorded.get(src.name)
            )
            for src in config.sources
        ]
        classes: dict[str, int] = {}
        for row in repo.catalog.backups(None):
            classes[row.storage_class] = classes.get(row.storage_class, 0) + row.stored_bytes
        # Versions of deleted backups that a lock keeps, and versions no backup owns that the
        # last verify found: billed until they are deleted.
        noncurrent = sum(d.size for d in repo.catalog.deferred_deletions())
        noncurrent += sum(size for _, size, _ in repo.catalog.strays().values())
        if noncurrent:
            cls = repo.storage.storage_class
            classes[cls] = classes.get(cls, 0) + noncurrent
        description = repo.storage.description
    costs = {c: monthly_cost(c, b) for c, b in classes.items()}
    known = [c for c in costs.values() if c is not None]
    return {
        "daemon": daemon,
        "sources": sources,
        "storage": {
            "description": description,
            "classes": [
                {"storage_class": c, "stored_bytes": b, "monthly_usd": costs[c]}
                for c, b in sorted(classes.items())
            ],
            "stored_bytes": sum(classes.values()),
            "noncurrent_bytes": noncurrent,
            "monthly_usd": round(sum(known), 4) if known else None,
            "object_lock": config.storage.object_lock,
        },
    }

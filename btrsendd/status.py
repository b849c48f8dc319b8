"""``btrsendd status [--json]``: what is backed up, what runs next, what it costs, what failed.

Two sources, joined here: the catalog (backups, chains, stored bytes), which is always there,
and the state the daemon publishes in ``<state_dir>/daemon.json`` (what it is doing, the
upload's progress, each source's last error), which is only current while the daemon runs.
Without a daemon, status still answers from the catalog and says "daemon not running"; the
last errors it shows then are the ones the daemon saw before it stopped.

What storing costs per month comes from ``pricing.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from btrsendd import snapshots
from btrsendd.config import Config, SourceConfig, config_path, load_config
from btrsendd.cron import schedule_trigger
from btrsendd.daemon import format_time, live_pid, read_state
from btrsendd.errors import BtrsenddError
from btrsendd.model import Backup
from btrsendd.pricing import monthly_cost
from btrsendd.progress import human_bytes
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


def _source_report(
    repo: Repository, src: SourceConfig, daemon: dict[str, Any], trigger: Any, now: datetime
) -> dict[str, Any]:
    config = repo.config
    rows = repo.catalog.backups(src.name)
    last = rows[-1] if rows else None
    chain = [r for r in rows if last is not None and r.chain == last.chain]
    try:
        local: int | None = len(snapshots.list_snapshots(src.snapshot_dir))
        local_error = None
    except BtrsenddError as exc:
        local, local_error = None, str(exc)
    cycle = daemon.get("cycle") or {}
    running_here = bool(daemon.get("running")) and cycle.get("source") == src.name
    # While the daemon works on this source, its `uploading` row is that work, not a leftover.
    interrupted = [] if running_here else repo.catalog.backups(src.name, states=("uploading",))
    seen = (daemon.get("sources") or {}).get(src.name) or {}
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
        "uploading": {"bytes": cycle.get("bytes", 0), "rate": cycle.get("rate", 0.0)}
        if running_here
        else None,
        "interrupted": [{"id": r.id, "volumes_stored": r.volume_count} for r in interrupted],
        "last_run": {"at": seen.get("last_run_at"), "result": seen.get("last_result")},
        "problem": _date_problem(src.name, last, now),
        "last_error": None
        if not seen.get("last_error")
        else {"at": seen.get("last_error_at"), "message": seen.get("last_error")},
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


def _daemon_report(config: Config) -> dict[str, Any]:
    state = read_state(config.state_dir)
    pid = live_pid(state)
    if pid is None or state is None:
        seen = state or {}
        return {
            "running": False,
            "last_seen": seen.get("updated_at"),
            "sources": seen.get("sources"),
        }
    return {
        "running": True,
        "pid": pid,
        "state": state.get("state"),
        "status": state.get("status"),
        "started_at": state.get("started_at"),
        "next_run": state.get("next_run"),
        "cycle": state.get("cycle"),
        "sources": state.get("sources"),
    }


def build_report(config: Config, now: datetime) -> dict[str, Any]:
    """Everything ``status`` shows, as the JSON ``status --json`` prints."""
    daemon = _daemon_report(config)
    trigger = schedule_trigger(config)
    if not daemon["running"]:
        upcoming = trigger.get_next_fire_time(None, now)
        daemon["next_run"] = None if upcoming is None else upcoming.isoformat()
    with open_repository(config) as repo:
        sources = [_source_report(repo, src, daemon, trigger, now) for src in config.sources]
        classes: dict[str, int] = {}
        for row in repo.catalog.backups(None):
            classes[row.storage_class] = classes.get(row.storage_class, 0) + row.stored_bytes
        description = repo.storage.description
    costs = {c: monthly_cost(c, b) for c, b in classes.items()}
    known = [c for c in costs.values() if c is not None]
    return {
        "daemon": {k: v for k, v in daemon.items() if k != "sources"},
        "sources": sources,
        "storage": {
            "description": description,
            "classes": [
                {"storage_class": c, "stored_bytes": b, "monthly_usd": costs[c]}
                for c, b in sorted(classes.items())
            ],
            "stored_bytes": sum(classes.values()),
            "monthly_usd": round(sum(known), 4) if known else None,
        },
    }


# -- the human form --------------------------------------------------------------------------


def _when(iso: str | None) -> str:
    return "-" if iso is None else format_time(datetime.fromisoformat(iso))


def _usd(amount: float | None) -> str:
    return "price unknown" if amount is None else f"~${amount:.2f}/month"


def _daemon_line(d: Mapping[str, Any]) -> str:
    if d["running"]:
        return f"running (pid {d['pid']}) since {_when(d['started_at'])}: {d['status']}"
    seen = f" (last seen {_when(d['last_seen'])})" if d.get("last_seen") else ""
    upcoming = _when(d["next_run"])
    return f"not running{seen}; the schedule's next run would be {upcoming}"


def _source_lines(s: Mapping[str, Any]) -> list[str]:
    lines = [s["name"]]

    def add(label: str, text: str) -> None:
        lines.append(f"  {label:<13} {text}")

    last = s["last_backup"]
    if last is None:
        add("last backup", "none yet")
    else:
        add(
            "last backup",
            f"{last['date']} {last['kind']}, {human_bytes(last['raw_bytes'])} sent, "
            f"{human_bytes(last['stored_bytes'])} stored ({last['id']})",
        )
    nxt = s["next_backup"]
    add(
        "next backup",
        "none within a year" if nxt["at"] is None else f"{_when(nxt['at'])} ({nxt['action']})",
    )
    chain = s["chain"]
    if chain is not None:
        add(
            "chain",
            f"{chain['length']}/{chain['limit']} backups since {chain['first_date']} "
            f"({chain['age_days']} days)",
        )
    if s["local_snapshots"] is None:
        add("snapshots", f"unknown: {s['local_snapshots_error']}")
    else:
        add("snapshots", f"{s['local_snapshots']} local")
    up = s["uploading"]
    if up is not None and up["bytes"]:
        add("uploading", f"{human_bytes(up['bytes'])} at {human_bytes(up['rate'])}/s")
    elif up is not None:
        add("running", "being backed up now (snapshot, plan, expiry)")
    for partial in s["interrupted"]:
        add(
            "interrupted",
            f"{partial['id']}: {partial['volumes_stored']} volume(s) stored; the next cycle "
            "resumes it",
        )
    run = s["last_run"]
    if run["at"]:
        add("last run", f"{_when(run['at'])}: {run['result']}")
    error = s["last_error"]
    if s["problem"]:
        add("problem", s["problem"])
    add("last error", "none" if error is None else f"{_when(error['at'])}: {error['message']}")
    return lines


def render(report: Mapping[str, Any]) -> str:
    storage = report["storage"]
    lines = [f"daemon    {_daemon_line(report['daemon'])}", f"storage   {storage['description']}"]
    for s in report["sources"]:
        lines += ["", *_source_lines(s)]
    lines.append("")
    if not storage["classes"]:
        lines.append("stored    nothing yet")
    for c in storage["classes"]:
        lines.append(
            f"stored    {c['storage_class']}: {human_bytes(c['stored_bytes'])}, "
            f"{_usd(c['monthly_usd'])}"
        )
    if len(storage["classes"]) > 1:
        lines.append(
            f"total     {human_bytes(storage['stored_bytes'])}, {_usd(storage['monthly_usd'])}"
        )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    report = build_report(config, datetime.now().astimezone())
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0

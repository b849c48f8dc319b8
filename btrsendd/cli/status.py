"""``btrsendd status [--json]``: the report of ``btrsendd/status.py``, for people or scripts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from btrsendd.cli.common import add_command, load_config
from btrsendd.units import human_bytes

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "status",
        run,
        "per source: last and next backup, chain, stored bytes, a running upload, last error",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _when(iso: str | None) -> str:
    from btrsendd.daemon.state import format_time

    return "-" if iso is None else format_time(datetime.fromisoformat(iso))


def _usd(amount: float | None) -> str:
    return "price unknown" if amount is None else f"~${amount:.2f}/month"


def _daemon_line(d: Mapping[str, Any]) -> str:
    if d["running"]:
        return f"running (pid {d['pid']}) since {_when(d['started_at'])}: {d['status']}"
    seen = f" (last seen {_when(d['last_seen'])})" if d.get("last_seen") else ""
    upcoming = _when(d["next_run"])
    return f"not running{seen}; the schedule's next run would be {upcoming}"


def _what_became(stop: Mapping[str, Any]) -> str:
    """What became of the backup an interruption (no longer pending) cut short."""
    if stop["backup_id"] is None:
        return "no upload was under way"
    if stop["state"] == "gone":
        stored = stop["volumes_stored"]
        return f"{stop['backup_id']} was discarded" + (
            f" ({stored} volume(s) stored)" if stored else " (nothing was stored)"
        )
    if stop["state"] == "complete":
        return f"{stop['backup_id']} was completed since"
    return f"{stop['backup_id']} is being deleted"


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
        from btrsendd.progress import Total, summary  # not at start-up: dataclasses, threads

        total = None if up.get("total") is None else Total(up["total"], up.get("estimate"))
        add("uploading", summary(up["bytes"], up["rate"], total, up.get("eta")))
    elif up is not None:
        add("running", "being backed up now (snapshot, plan, expiry)")
    for partial in s["interrupted"]:
        stored = f"{partial['volumes_stored']} volume(s) stored"
        if partial.get("at"):  # the interruption recorded is this one's
            add(
                "interrupted",
                f"{_when(partial['at'])}: {partial['reason']}; {partial['id']} has {stored}, "
                "the next cycle resumes it",
            )
        else:
            add("interrupted", f"{partial['id']}: {stored}; the next cycle resumes it")
    stop = (s.get("interruptions") or {}).get("last")
    if stop and not stop["resolved"] and stop["state"] not in ("uploading", "resuming"):
        add("interrupted", f"{_when(stop['at'])}: {stop['reason']}; {_what_became(stop)}")
    last_run = s["last_run"]
    if last_run["at"]:
        add("last run", f"{_when(last_run['at'])}: {last_run['result']}")
    error = s["last_error"]
    if s["locked_until"]:
        add("locked", f"until {_when(s['locked_until'])} (the oldest kept backup)")
    waiting = s["deferred_deletion"]
    if waiting:
        add(
            "deleting",
            f"{waiting['versions']} object version(s), {human_bytes(waiting['bytes'])}, of "
            f"deleted backups: locked until {_when(waiting['until'])}, then deleted",
        )
    strays = s["stray_versions"]
    if strays:
        add(
            "strays",
            f"{strays['versions']} version(s) no backup owns, {human_bytes(strays['bytes'])}, "
            f"found by verify {_when(strays['checked_at'])}; `btrsendd verify --clean` "
            "deletes those not locked",
        )
    if s["problem"]:
        add("problem", s["problem"])
    add("last error", "none" if error is None else f"{_when(error['at'])}: {error['message']}")
    return lines


def render(report: Mapping[str, Any]) -> str:
    """The report of ``status.build_report`` for people: the daemon, each source, storage."""
    storage = report["storage"]
    lock = "" if storage["object_lock"] == "off" else f" (Object Lock: {storage['object_lock']})"
    lines = [
        f"daemon    {_daemon_line(report['daemon'])}",
        f"storage   {storage['description']}{lock}",
    ]
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


def run(args: argparse.Namespace) -> int:
    from btrsendd.status import build_report

    config = load_config(args)
    report = build_report(config, datetime.now().astimezone())
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0

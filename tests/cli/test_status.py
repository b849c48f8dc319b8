"""``btrsendd status`` for people: ``render`` of the report ``status.build_report`` makes.

Times are written without a UTC offset, which ``render`` shows as they are in any time zone.
The expected text is what btrsendd printed before the report and its wording were apart.
"""

from __future__ import annotations

from typing import Any

from btrsendd.cli.status import render

BACKED_UP: dict[str, Any] = {
    "name": "data",
    "path": "/srv/data",
    "last_backup": {
        "id": "b1",
        "date": "2000-01-07",
        "kind": "incremental",
        "raw_bytes": 123456789,
        "stored_bytes": 98765432,
        "completed_at": "2000-01-07T01:00:00",
    },
    "next_backup": {"at": "2000-01-08T00:00:00", "action": "incremental"},
    "chain": {"id": "b0", "length": 2, "limit": 3, "first_date": "2000-01-01", "age_days": 6},
    "local_snapshots": 2,
    "local_snapshots_error": None,
    "uploading": None,
    "interrupted": [],
    "interruptions": {"by_signal": 0, "by_error": 0, "last": None},
    "last_run": {"at": "2000-01-07T00:00:05", "result": "backed up"},
    "problem": None,
    "locked_until": None,
    "deferred_deletion": None,
    "stray_versions": None,
    "last_error": None,
}

BACKED_UP_LINES = [
    "  last backup   2000-01-07 incremental, 117.7 MiB sent, 94.2 MiB stored (b1)",
    "  next backup   2000-01-08 00:00 (incremental)",
    "  chain         2/3 backups since 2000-01-01 (6 days)",
    "  snapshots     2 local",
]

LOCAL_STORAGE = {
    "description": "local directory /a",
    "classes": [{"storage_class": "local", "stored_bytes": 1000, "monthly_usd": 0.0}],
    "stored_bytes": 1000,
    "noncurrent_bytes": 0,
    "monthly_usd": 0.0,
    "object_lock": "off",
}


def test_a_running_daemon_and_sources_in_every_state() -> None:
    troubled = {
        **BACKED_UP,
        "name": "home",
        "last_backup": None,
        "next_backup": {"at": None, "action": None},
        "chain": None,
        "local_snapshots": None,
        "local_snapshots_error": "cannot list /x: denied",
        "uploading": {"bytes": 0, "rate": 0.0},
        "interrupted": [{"id": "b9", "volumes_stored": 3}],
        "last_run": {"at": None, "result": None},
        "problem": "the newest backup is ahead",
        "locked_until": "2000-04-14T00:00:00",
        "deferred_deletion": {"versions": 4, "bytes": 3 * 2**20, "until": "2000-01-20T00:00:00"},
        "stray_versions": {"versions": 2, "bytes": 2**20, "checked_at": "2000-01-07T03:00:00"},
        "last_error": {"at": "2000-01-07T00:00:05", "message": "boom"},
    }
    uploading = {**BACKED_UP, "name": "srv", "uploading": {"bytes": 5 * 2**20, "rate": 2.5 * 2**20}}
    report = {
        "daemon": {
            "running": True,
            "pid": 42,
            "state": "idle",
            "status": "idle, next run x",
            "started_at": "2000-01-07T00:00:00",
            "next_run": "2000-01-08T00:00:00",
            "cycle": None,
        },
        "sources": [BACKED_UP, troubled, uploading],
        "storage": {
            "description": "s3 bucket b",
            "classes": [
                {"storage_class": "DEEP_ARCHIVE", "stored_bytes": 5 * 10**12, "monthly_usd": 4.95},
                {"storage_class": "WEIRD", "stored_bytes": 10, "monthly_usd": None},
            ],
            "stored_bytes": 5 * 10**12 + 10,
            "noncurrent_bytes": 3 * 2**20,
            "monthly_usd": 4.95,
            "object_lock": "compliance",
        },
    }
    assert render(report).splitlines() == [
        "daemon    running (pid 42) since 2000-01-07 00:00: idle, next run x",
        "storage   s3 bucket b (Object Lock: compliance)",
        "",
        "data",
        *BACKED_UP_LINES,
        "  last run      2000-01-07 00:00:05: backed up",
        "  last error    none",
        "",
        "home",
        "  last backup   none yet",
        "  next backup   none within a year",
        "  snapshots     unknown: cannot list /x: denied",
        "  running       being backed up now (snapshot, plan, expiry)",
        "  interrupted   b9: 3 volume(s) stored; the next cycle resumes it",
        "  locked        until 2000-04-14 00:00 (the oldest kept backup)",
        "  deleting      4 object version(s), 3.0 MiB, of deleted backups: locked until "
        "2000-01-20 00:00, then deleted",
        "  strays        2 version(s) no backup owns, 1.0 MiB, found by verify 2000-01-07 03:00; "
        "`btrsendd verify --clean` deletes those not locked",
        "  problem       the newest backup is ahead",
        "  last error    2000-01-07 00:00:05: boom",
        "",
        "srv",
        *BACKED_UP_LINES,
        "  uploading     5.0 MiB at 2.5 MiB/s",
        "  last run      2000-01-07 00:00:05: backed up",
        "  last error    none",
        "",
        "stored    DEEP_ARCHIVE: 4.5 TiB, ~$4.95/month",
        "stored    WEIRD: 10 B, price unknown",
        "total     4.5 TiB, ~$4.95/month",
    ]


def test_a_daemon_last_seen_and_one_never_seen() -> None:
    seen = {
        "daemon": {"running": False, "last_seen": "2000-01-07T00:00:00", "next_run": None},
        "sources": [{**BACKED_UP, "last_run": {"at": None, "result": None}}],
        "storage": LOCAL_STORAGE,
    }
    assert render(seen).splitlines() == [
        "daemon    not running (last seen 2000-01-07 00:00); the schedule's next run would be -",
        "storage   local directory /a",
        "",
        "data",
        *BACKED_UP_LINES,
        "  last error    none",
        "",
        "stored    local: 1000 B, ~$0.00/month",
    ]
    never = {
        "daemon": {"running": False, "last_seen": None, "next_run": "2000-01-08T00:00:00"},
        "sources": [],
        "storage": {
            **LOCAL_STORAGE,
            "description": "s3 bucket c",
            "classes": [],
            "stored_bytes": 0,
        },
    }
    assert render(never).splitlines() == [
        "daemon    not running; the schedule's next run would be 2000-01-08 00:00",
        "storage   s3 bucket c",
        "",
        "stored    nothing yet",
    ]


def stop(**fields: Any) -> dict[str, Any]:
    """The last interruption as ``status --json`` reports it: SIGTERM to the daemon."""
    return {
        "at": "2000-01-07T00:00:05",
        "signal": "SIGTERM",
        "reason": "the daemon was stopped by SIGTERM",
        "backup_id": "b9",
        "date": "2000-01-07",
        "volumes_stored": 3,
        "outcome": "resume",
        "state": "uploading",
        "resolved": False,
        **fields,
    }


def interrupted_lines(source: dict[str, Any]) -> list[str]:
    report = {
        "daemon": {"running": False, "last_seen": None, "next_run": None},
        "sources": [{**BACKED_UP, **source}],
        "storage": LOCAL_STORAGE,
    }
    return [line for line in render(report).splitlines() if "interrupted" in line]


def test_an_interruption_says_when_why_and_what_became_of_the_backup() -> None:
    counts = {"by_signal": 1, "by_error": 0}
    pending = {
        "interrupted": [
            {
                "id": "b9",
                "volumes_stored": 3,
                "at": "2000-01-07T00:00:05",
                "signal": "SIGTERM",
                "reason": "the daemon was stopped by SIGTERM",
            }
        ],
        "interruptions": {**counts, "last": stop()},
    }
    assert interrupted_lines(pending) == [
        "  interrupted   2000-01-07 00:00:05: the daemon was stopped by SIGTERM; b9 has 3 "
        "volume(s) stored, the next cycle resumes it"
    ]
    discarded = {
        "interruptions": {
            **counts,
            "last": stop(reason="stopped by SIGINT (Ctrl-C)", volumes_stored=0, state="gone"),
        }
    }
    assert interrupted_lines(discarded) == [
        "  interrupted   2000-01-07 00:00:05: stopped by SIGINT (Ctrl-C); b9 was discarded "
        "(nothing was stored)"
    ]
    failed = {
        "interruptions": {
            **counts,
            "last": stop(signal=None, reason="zstd failed", outcome="discarded", state="gone"),
        }
    }
    assert interrupted_lines(failed) == [
        "  interrupted   2000-01-07 00:00:05: zstd failed; b9 was discarded (3 volume(s) stored)"
    ]
    elsewhere = {"interruptions": {**counts, "last": stop(backup_id=None, state=None)}}
    assert interrupted_lines(elsewhere) == [
        "  interrupted   2000-01-07 00:00:05: the daemon was stopped by SIGTERM; no upload was "
        "under way"
    ]
    # Being resumed by the daemon now, or a backup completed since: nothing to say.
    for last in (stop(state="resuming"), stop(state="complete", resolved=True)):
        assert interrupted_lines({"interruptions": {**counts, "last": last}}) == []


def test_an_upload_with_an_estimate_shows_it() -> None:
    up = {"bytes": 5 * 2**20, "rate": 2**20, "total": 20 * 2**20, "estimate": "x", "eta": 15.0}
    report = {
        "daemon": {"running": False, "last_seen": None, "next_run": None},
        "sources": [{**BACKED_UP, "uploading": up}],
        "storage": LOCAL_STORAGE,
    }
    assert "  uploading     5.0 MiB of ~20.0 MiB (~25%) at 1.0 MiB/s, ETA ~0:00:15" in (
        render(report).splitlines()
    )

"""btrsendd under systemd: the protocols it speaks, then the unit under a real systemd.

sd_notify and the journal's native protocol are tested against real sockets the tests bind.
The unit is tested by booting a minimal Debian with ``systemd-nspawn`` (see
``tests/fixtures/nspawn.py``) and doing what the README tells users to do: install, enable,
read the journal, trigger, reload, stop.  Those tests are marked ``systemd`` so they can be
skipped locally with ``-m 'not systemd'``; ``make test`` runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from btrsendd.journal import JournalSocket, encode
from btrsendd.log import journal_fields
from btrsendd.notify import Notifier
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.fixtures.nspawn import Machine, booted

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "btrsendd.service"
VENV = Path(sys.prefix)

# -- sd_notify -----------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_messages_reach_the_socket(
    abstract: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"@btrsendd-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name[1:] if abstract else name)
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        notifier = Notifier.from_environment()
        # Children (gpg, compressors) must not inherit a socket that is not theirs.
        assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
        assert notifier.watchdog_interval == 2.0

        notifier.ready("idle, next run 2026-11-27 00:00")
        notifier.status("uploading home\n3.2 GiB")
        notifier.watchdog()
        notifier.stopping("stopping")
        received = [server.recv(4096).decode().split("\n") for _ in range(4)]
    assert received == [
        ["READY=1", "STATUS=idle, next run 2026-11-27 00:00", f"MAINPID={os.getpid()}"],
        ["STATUS=uploading home 3.2 GiB"],
        ["WATCHDOG=1"],
        ["STOPPING=1", "STATUS=stopping"],
    ]


def test_watchdog_meant_for_another_process_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval is None
    assert not notifier.enabled
    notifier.ready("idle")  # outside systemd: nothing to do, and no error


# -- the journal ---------------------------------------------------------------------------


def test_journal_entries_keep_newlines_in_binary_fields() -> None:
    entry = encode({"MESSAGE": "backup.failed", "BTRSENDD_ERROR": "line 1\nline 2"})
    assert entry == (
        b"MESSAGE=backup.failed\nBTRSENDD_ERROR\n" + struct.pack("<Q", 13) + b"line 1\nline 2\n"
    )


def test_events_become_journal_fields() -> None:
    fields = journal_fields(
        {
            "event": "backup.completed",
            "level": "warning",
            "timestamp": "2026-11-26T00:00:00",
            "source": "home",
            "backup_id": "2026-11-26-full-abc123",
            "bytes": 42,
            "dates": ["2026-11-01"],
            "parent": None,
        }
    )
    assert fields == {
        "MESSAGE": "backup.completed source=home backup_id=2026-11-26-full-abc123 bytes=42 "
        'dates=["2026-11-01"]',
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "btrsendd",
        "BTRSENDD_EVENT": "backup.completed",
        "BTRSENDD_SOURCE": "home",
        "BTRSENDD_BACKUP_ID": "2026-11-26-full-abc123",
        "BTRSENDD_BYTES": "42",
        "BTRSENDD_DATES": '["2026-11-01"]',
    }


def test_journal_socket_sends_datagrams_and_large_entries_in_a_memfd(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        journal = JournalSocket(str(path))
        journal.send(b"MESSAGE=hello\n")
        assert server.recv(4096) == b"MESSAGE=hello\n"

        big = b"MESSAGE=" + b"x" * (8 * 1024**2) + b"\n"  # beyond any datagram size limit
        journal.send(big)
        _, ancillary, _, _ = server.recvmsg(16, socket.CMSG_LEN(4))
        [(level, kind, data)] = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fd = struct.unpack("i", data)[0]
        try:
            assert os.pread(fd, len(big) + 1, 0) == big
        finally:
            os.close(fd)


@pytest.mark.parametrize("matches", [True, False])
def test_the_journal_is_used_only_when_stderr_is_the_journal_stream(
    matches: bool, tmp_path: Path
) -> None:
    stream, other = tmp_path / "stream", tmp_path / "other"
    stream.touch()
    other.touch()
    st = os.stat(stream)
    with open(stream if matches else other, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", "from btrsendd.journal import *; print(stderr_is_journal())"],
            stderr=err,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
            check=True,
        )
    assert proc.stdout.strip() == str(matches)


# -- the unit under systemd ----------------------------------------------------------------


def _install(machine: Machine, drop_in: str) -> None:
    """What `make install` does, minus pip: the command on PATH and the unit in /etc.

    The command runs from the checkout's venv, bound into the container at its own path; a
    checkout under /tmp would be hidden by the unit's PrivateTmp, so the drop-in binds it back
    into the service's view (an installed btrsendd lives in /opt/btrsendd and needs none).
    """
    script = f"""
        set -e
        ln -s {VENV}/bin/btrsendd /usr/local/bin/btrsendd
        install -m 0644 {UNIT} /etc/systemd/system/btrsendd.service
        mkdir -p /etc/systemd/system/btrsendd.service.d
        cat > /etc/systemd/system/btrsendd.service.d/test.conf <<'EOF'
        [Service]
        BindReadOnlyPaths={VENV.resolve().parent}
        {drop_in}
        EOF
        systemctl daemon-reload
    """
    machine.run("sh", "-c", textwrap.dedent(script))


@pytest.fixture
def machine(
    nspawn_root: Path, tmp_path: Path, make_btrfs: MakeBtrfs, gpg_key: GpgKey
) -> Iterator[Machine]:
    """A booted container with a btrfs at /srv/btrfs, a config in /etc/btrsendd and the
    checkout (with its venv) at its host path, read-only."""
    fs = make_btrfs("fs")
    make_subvolume(fs / "data")
    (fs / "data" / "hello").write_text("hello from the host\n")
    for directory in ("snapshots", "archive"):
        (fs / directory).mkdir(mode=0o700)
    # A hook, to see hooks run inside the unit's sandbox: what it prints reaches the journal.
    hook = fs / "hook"
    hook.write_text('#!/bin/sh\necho "$BTRSENDD_EVENT of $BTRSENDD_SOURCE under systemd"\n')
    hook.chmod(0o755)
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o700)
    shutil.copytree(
        gpg_key.public_home, etc / "gnupg", ignore=shutil.ignore_patterns("S.*", "*.lock")
    )
    config = etc / "btrsendd.toml"
    config.write_text(
        textwrap.dedent(f"""\
            state_dir = "/var/lib/btrsendd"
            [pipeline]
            compression = "zstd"
            volume_size = "1MiB"
            [encryption]
            recipients = ["{gpg_key.fingerprint}"]
            gnupg_home = "/etc/btrsendd/gnupg"
            [storage]
            backend = "local"
            path = "/srv/btrfs/archive"
            [[sources]]
            name = "data"
            path = "/srv/btrfs/data"
            snapshot_dir = "/srv/btrfs/snapshots"
            [hooks]
            pre_snapshot = ["/srv/btrfs/hook"]
            post_snapshot = ["/srv/btrfs/hook"]
            on_success = ["/srv/btrfs/hook"]
            """)
    )
    config.chmod(0o600)
    ro = [REPO] if VENV.is_relative_to(REPO) else [REPO, VENV]
    with booted(nspawn_root, tmp_path, [(fs, "/srv/btrfs"), (etc, "/etc/btrsendd")], ro) as m:
        yield m


def journal(machine: Machine, *matches: str) -> list[dict[str, Any]]:
    out = machine.run("journalctl", "-u", "btrsendd", "-o", "json", "--no-pager", *matches)
    return [json.loads(line) for line in out.stdout.splitlines()]


def prop(machine: Machine, name: str) -> str:
    return machine.run("systemctl", "show", "-P", name, "btrsendd").stdout.strip()


@pytest.mark.systemd
def test_the_unit_verifies_and_its_exposure_stays_low(machine: Machine) -> None:
    _install(machine, "")
    verify = machine.run("systemd-analyze", "verify", "btrsendd.service", check=False)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == ""
    security = machine.run("systemd-analyze", "security", "btrsendd.service", check=False)
    exposure = float(
        security.stdout.split("Overall exposure level for btrsendd.service:")[1].split()[0]
    )
    assert exposure <= 2.5, security.stdout


@pytest.mark.systemd
def test_enable_journal_trigger_reload_stop(machine: Machine) -> None:
    # Snapshot and archive directories must be writable under ProtectSystem=strict; the
    # short watchdog makes a missing ping fail the test within seconds.
    _install(
        machine,
        "ReadWritePaths=/srv/btrfs/snapshots /srv/btrfs/archive\nWatchdogSec=4s",
    )
    # Type=notify: `enable --now` returns once the daemon sent READY=1.
    machine.run("systemctl", "enable", "--now", "btrsendd")
    assert prop(machine, "ActiveState") == "active"
    assert prop(machine, "StatusText").startswith("idle, next run ")
    main_pid = prop(machine, "MainPID")

    machine.wait_until(
        "daemon.started in the journal", lambda: journal(machine, "BTRSENDD_EVENT=daemon.started")
    )
    [started] = journal(machine, "BTRSENDD_EVENT=daemon.started")
    assert started["PRIORITY"] == "6"
    assert started["SYSLOG_IDENTIFIER"] == "btrsendd"
    assert started["BTRSENDD_PID"] == main_pid
    assert started["BTRSENDD_CONFIG"] == "/etc/btrsendd/btrsendd.toml"
    assert started["MESSAGE"].startswith("daemon.started ")

    machine.run("systemctl", "kill", "-s", "USR1", "btrsendd")

    def backups() -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(machine.run("btrsendd", "list", "--json").stdout)
        return listed

    machine.wait_until(
        "a backup after SIGUSR1", lambda: [b for b in backups() if b["state"] == "complete"]
    )
    [backup] = backups()
    machine.wait_until(
        "backup.completed in the journal",
        lambda: journal(machine, "BTRSENDD_EVENT=backup.completed"),
    )
    [completed] = journal(machine, "BTRSENDD_EVENT=backup.completed")
    assert completed["BTRSENDD_SOURCE"] == "data"
    assert completed["BTRSENDD_BACKUP_ID"] == backup["id"]
    assert int(completed["BTRSENDD_BYTES"]) == backup["raw_bytes"]
    assert completed["PRIORITY"] == "6"

    # The hooks ran inside the sandbox, in order, and said so in the journal.
    machine.wait_until(
        "the on_success hook", lambda: len(journal(machine, "BTRSENDD_EVENT=hook.finished")) == 3
    )
    hooks = journal(machine, "BTRSENDD_EVENT=hook.finished")
    assert [h["BTRSENDD_HOOK"] for h in hooks] == ["pre_snapshot", "post_snapshot", "on_success"]
    assert hooks[-1]["BTRSENDD_OUTPUT"] == "on_success of data under systemd"

    status = json.loads(machine.run("btrsendd", "status", "--json").stdout)
    assert status["daemon"]["running"] is True
    assert str(status["daemon"]["pid"]) == main_pid
    assert status["sources"][0]["last_backup"]["id"] == backup["id"]
    trigger = machine.run("btrsendd", "trigger")
    assert f"(pid {main_pid}) is running" in trigger.stdout

    # The watchdog is pinged (every 2 s with WatchdogSec=4s).
    before = prop(machine, "WatchdogTimestampMonotonic")
    machine.wait_until(
        "a watchdog ping", lambda: prop(machine, "WatchdogTimestampMonotonic") != before, timeout=10
    )

    machine.run("systemctl", "reload", "btrsendd")
    machine.wait_until(
        "config.reloaded", lambda: journal(machine, "BTRSENDD_EVENT=config.reloaded")
    )
    assert prop(machine, "ActiveState") == "active"
    assert prop(machine, "MainPID") == main_pid

    machine.run("systemctl", "stop", "btrsendd")
    assert prop(machine, "ActiveState") == "inactive"
    assert prop(machine, "Result") == "success"
    assert prop(machine, "ExecMainStatus") == "0"
    assert journal(machine, "BTRSENDD_EVENT=daemon.stopped")

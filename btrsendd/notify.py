"""sd_notify: tell systemd when the daemon is ready, what it is doing, and that it is alive.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (sd_notify(3)); a name starting with ``@`` is in the abstract namespace.
Written against the socket module rather than systemd-python, which needs libsystemd-dev
and a compiler to install, for a protocol this small.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the daemon runs the same
in a terminal.  A failed send is never fatal: systemd's readiness timeout or watchdog is
what notices a daemon that cannot talk to it, and crashing over it would only hide why.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass


@dataclass
class Notifier:
    """A connection to systemd's notification socket, or a no-op without one."""

    address: str | None
    #: Half of systemd's watchdog timeout (``WatchdogSec``), in seconds: the recommended ping
    #: interval; ``None`` when no watchdog is configured for this process.
    watchdog_interval: float | None = None

    @classmethod
    def from_environment(cls) -> Notifier:
        """Read and remove ``$NOTIFY_SOCKET`` and the watchdog variables.

        Removing them keeps child processes (gpg, compressors) from seeing a socket that is
        not theirs, as ``sd_notify(unset_environment=1)`` does.
        """
        address = os.environ.pop("NOTIFY_SOCKET", None) or None
        usec = os.environ.pop("WATCHDOG_USEC", None)
        pid = os.environ.pop("WATCHDOG_PID", None)
        interval = None
        # WATCHDOG_PID names the process the watchdog is meant for; a forked helper that
        # inherited the variables must not ping on the daemon's behalf.
        if usec and usec.isdigit() and int(usec) > 0 and (pid is None or pid == str(os.getpid())):
            interval = int(usec) / 1e6 / 2
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> None:
        """Send ``KEY=VALUE`` lines, e.g. ``send(READY="1", STATUS="idle")``."""
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        # STATUS= is one line: a newline would start a new (bogus) assignment.
        message = "\n".join(f"{k}={v.replace(chr(10), ' ')}" for k, v in fields.items())
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
        ):
            sock.sendto(message.encode(), target)

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def reloading(self) -> None:
        self.send(RELOADING="1", STATUS="reloading the configuration")

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def stopping(self, status: str) -> None:
        self.send(STOPPING="1", STATUS=status)

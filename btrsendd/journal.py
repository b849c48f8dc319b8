"""The journald native protocol: structured entries as datagrams, fields kept as fields.

Written to stderr, a log line reaches the journal as one ``MESSAGE``: its fields are lost and
``journalctl BTRSENDD_EVENT=backup.completed`` finds nothing.  Sent over the native protocol
(systemd.journal-fields(7), "Native Journal Protocol"), each entry is a set of ``KEY=VALUE``
fields.  The socket module is enough for it; systemd-python would need a compiler and
libsystemd-dev to install.

When to use it: when systemd connected our stderr to the journal, which it announces in
``$JOURNAL_STREAM`` (``<device>:<inode>`` of that stream, systemd.exec(5)), the documented
signal for a service to upgrade to the native protocol.  Checking that the variable matches
stderr, rather than only that it is set, keeps a command run from a shell inside a unit (whose
stderr is a terminal or a pipe) printing to where its user is looking.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Mapping

SOCKET_PATH = "/run/systemd/journal/socket"


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd set up for this service."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def encode(fields: Mapping[str, str]) -> bytes:
    """One entry in the wire format.

    ``KEY=VALUE\\n`` for single-line values; a value with a newline is sent as ``KEY\\n``, its
    length as a little-endian 64-bit integer, the bytes, then ``\\n``, since a newline would
    otherwise end the field.
    """
    parts: list[bytes] = []
    for key, value in fields.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


class JournalSocket:
    """A datagram socket to journald, shared by every thread (datagrams do not interleave)."""

    def __init__(self, path: str = SOCKET_PATH) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, entry: bytes) -> None:
        """Send one encoded entry; raises ``OSError`` if journald cannot be reached.

        An entry larger than a datagram may be (``EMSGSIZE``) goes the way sd_journal_send
        sends it: in a sealed memfd passed as a file descriptor, which journald reads whole.
        """
        try:
            self._sock.sendto(entry, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(entry)

    def _send_memfd(self, entry: bytes) -> None:
        fd = os.memfd_create("btrsendd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(entry)
            while view:
                view = view[os.write(fd, view) :]
            # journald accepts only sealed memfds: the content cannot change under it.
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            self._sock.sendmsg(
                [], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0, self.path
            )
        finally:
            os.close(fd)

"""What a backed-up day held at one path, as replaying a chain's file indexes tells it.

These are the answers the replay (``tree.py``) gives and its readers consume: ``find`` and
``diff`` print them, ``restore --path`` recreates them.  A file's contents are ``pieces``:
ranges of the file and where their bytes lie, in some backup's raw send stream, so that a
restore of one file reads only the volumes holding those ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev"]


@dataclass(frozen=True, slots=True)
class Piece:
    """``length`` bytes of a file from ``offset``: found in backup ``backup_id``'s raw send
    stream at ``stream_offset``, or zeros (allocated, never written) when ``backup_id`` is
    None.  The ranges a file has no piece for are holes, and read as zeros too."""

    offset: int
    length: int
    backup_id: str | None
    stream_offset: int = 0
    #: Why these bytes cannot be restored from the stream, or None when they can: data sent
    #: compressed as is (``btrfs send --compressed-data``, whose ``stream_offset`` is then
    #: that of the encoded extent) or not sent at all (``--no-data``).
    unrestorable: str | None = None


@dataclass(frozen=True)
class Entry:
    """One path of a backed-up day and what was there."""

    #: Relative to the subvolume's root, '/'-separated, no leading '/'; "" is the root
    #: (btrfs send names it by the empty path).
    path: str
    kind: Kind
    #: Permission bits and file type, as ``st_mode``.
    mode: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    #: The same number for every name of one inode (hard links), within one day's tree.
    inode: int
    #: The symlink's target; None for anything else.
    target: str | None = None
    #: The device number of a chardev or blockdev.
    rdev: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    #: For files: the ranges that hold data or zeros, in file order, not overlapping.
    pieces: tuple[Piece, ...] = ()
    #: The inode flags (``chattr``) btrfs sent, 0 when none were.
    fileattr: int = 0

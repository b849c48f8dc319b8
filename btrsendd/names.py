"""The shapes of the names btrsendd writes, and the check every name read back must pass.

Names come back from places btrsendd does not control: a bucket that someone else can write
to, a manifest, a vault inventory, a catalog restored from elsewhere.  They end up in object
keys and file-system paths (a restored snapshot's name, a working directory's entries), so
each is checked to be exactly one safe path component of its kind before it is used: never
``..``, never a ``/``, never a name that only looks like one of ours.
"""

from __future__ import annotations

import re
from typing import Literal

NameKind = Literal["source", "backup id", "snapshot", "volume"]

#: Source names are chosen in the configuration (``config.SourceConfig``): the same alphabet.
SOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: ``2026-11-26-full-1b4684``: the date, the kind, six hex digits (``backup.Engine.upload``).
BACKUP_ID_RE = re.compile(r"\d{4}-\d{2}-\d{2}-(?:full|inc)-[0-9a-f]{6}")
#: ``2026-11-26`` or ``2026-11-26.2`` (``snapshots.snapshot_name``).  ``backup-stdin``
#: streams name whatever subvolume the sender chose, so restore also accepts any name in
#: the source alphabet there (``SOURCE_RE``), never a path.
SNAPSHOT_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:\.[1-9]\d{0,5})?")
#: ``vol-00000.btrfs.zst.gpg`` (``backup._volume_name``).
VOLUME_RE = re.compile(r"vol-\d{5,9}\.btrfs(?:\.gz|\.zst)?(?:\.gpg)?")

_PATTERNS: dict[NameKind, re.Pattern[str]] = {
    "source": SOURCE_RE,
    "backup id": BACKUP_ID_RE,
    "snapshot": SNAPSHOT_RE,
    "volume": VOLUME_RE,
}


class UnsafeName(ValueError):
    """A name from storage that is not one of ours; its text says which and why."""


def check_name(kind: NameKind, name: object) -> str:
    """Return ``name`` if it is a well-formed ``kind`` name, else raise ``UnsafeName``.

    The message quotes the name with ``repr`` so that control characters and slashes in a
    hostile name are visible, not interpreted, wherever the message is printed.
    """
    if not isinstance(name, str) or _PATTERNS[kind].fullmatch(name) is None:
        raise UnsafeName(f"{name!r} is not a valid {kind} name")
    return name


def is_safe_component(name: str) -> bool:
    """Whether ``name`` is a plain file name btrsendd may create inside a directory it owns:
    the source alphabet (letters, digits, ``.``, ``_``, ``-``, not starting with ``.``)."""
    return SOURCE_RE.fullmatch(name) is not None

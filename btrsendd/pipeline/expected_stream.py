"""The stream a planned backup must get: its kind, its snapshot, and its link to its parent.

A stream can be whole and undamaged (``sendstream``) and still be the wrong one: a full
stream where an incremental was due, an incremental relative to another snapshot than the
parent backup's (restoring it onto that parent fails, or worse), a stream of another
subvolume.  What the planner chose is known before the first byte arrives; the stream says
what it is in its first command; ``ExpectedStream`` compares the two there and then.

Backups recorded before btrsendd checked streams have no stream identity: an incremental on
one is compared with the UUID of the parent's snapshot when that is known, and otherwise its
link is accepted and the log says it could not be checked (``backup.link_unchecked``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from btrsendd import snapshots
from btrsendd.catalog import Catalog
from btrsendd.log import get_logger
from btrsendd.model import Kind, StreamIdentity
from btrsendd.names import is_safe_component
from btrsendd.pipeline import btrfs
from btrsendd.pipeline.sendstream import StreamError, uuid_text


@dataclass(frozen=True)
class ExpectedStream:
    """What one backup's stream must say it is, known before its first byte is read.

    Use as a ``StreamChecker``'s ``expect``: it raises ``StreamError`` for a stream of the
    wrong kind, of another snapshot, or relative to another parent.  ``uuid`` is what
    ``btrfs send`` names the snapshot being backed up by (None when it is not known, as with
    ``backup-stdin``).  An incremental's stream must be relative to the subvolume its parent
    backup's stream named (``parent``); for a parent recorded before streams were checked,
    ``parent_uuid`` is the UUID its snapshot was sent by, when known.  With neither, the
    link cannot be checked.
    """

    kind: Literal["full", "incremental"]
    uuid: str | None = None
    parent: StreamIdentity | None = None
    parent_uuid: str | None = None
    #: How messages name the parent backup, e.g. "the backup of 2000-01-07".
    parent_label: str = "the parent backup"

    @property
    def link_checkable(self) -> bool:
        return self.kind == "full" or self.parent is not None or self.parent_uuid is not None

    def __call__(self, identity: StreamIdentity) -> None:
        if not is_safe_component(identity.name):
            # Restore names the restored day after it (backup-stdin records no snapshot),
            # and a rebuild refuses a manifest recording anything else.
            raise StreamError(
                f"the send stream's subvolume is called {identity.name!r}; btrsendd restores "
                "a backup under that name, so it must be letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit): rename the snapshot you send"
            )
        if self.kind == "full" and identity.parent_uuid is not None:
            raise StreamError(
                "a full backup was due, but the send stream is incremental (relative to "
                f"subvolume {uuid_text(identity.parent_uuid)}); send it without -p"
            )
        if self.kind == "incremental":
            self._check_link(identity)
        if self.uuid is not None and identity.uuid != self.uuid:
            raise StreamError(
                f"the send stream is of subvolume {uuid_text(identity.uuid)}, not of the "
                f"snapshot being backed up ({uuid_text(self.uuid)})"
            )

    def _check_link(self, identity: StreamIdentity) -> None:
        label = self.parent_label
        if identity.parent_uuid is None:
            raise StreamError(
                f"an incremental backup relative to {label} was due, but the send stream is a "
                f"full one; send it with -p and {label}'s snapshot"
            )
        if self.parent is not None and not identity.continues(self.parent):
            raise StreamError(
                f"the send stream is relative to subvolume {uuid_text(identity.parent_uuid)} "
                f"(ctransid {identity.parent_ctransid}), not to {label}, which sent "
                f"{uuid_text(self.parent.uuid)} (ctransid {self.parent.ctransid}); send it with "
                f"-p and {label}'s snapshot"
            )
        if self.parent is None and self.parent_uuid not in (None, identity.parent_uuid):
            assert self.parent_uuid is not None
            raise StreamError(
                f"the send stream is relative to subvolume {uuid_text(identity.parent_uuid)}, "
                f"not to {label}'s snapshot ({uuid_text(self.parent_uuid)}); send it with -p "
                "and that snapshot"
            )


def expected_stream(
    catalog: Catalog,
    kind: Kind,
    parent_id: str | None,
    snap: snapshots.Snapshot | None,
    parent_snap: snapshots.Snapshot | None,
) -> ExpectedStream:
    """What the stream of a backup of ``kind`` on the backup ``parent_id`` must say it is.

    ``snap`` and ``parent_snap`` are the snapshots it is sent from, when known (not for
    ``backup-stdin``).
    """
    uuid = None if snap is None else btrfs.send_uuid(snap.path)
    parent = None if parent_id is None else catalog.backup(parent_id)
    if parent is None:
        return ExpectedStream(kind, uuid)
    legacy_uuid = None
    if parent.stream is None:
        legacy_uuid = (
            parent.snapshot_uuid if parent_snap is None else btrfs.send_uuid(parent_snap.path)
        )
    expected = ExpectedStream(
        kind, uuid, parent.stream, legacy_uuid, f"the backup of {parent.date}"
    )
    if not expected.link_checkable:
        get_logger(source=parent.source).warning(
            "backup.link_unchecked",
            parent=parent.date.isoformat(),
            reason="the parent backup was stored before btrsendd checked send streams and "
            "names no snapshot; its stream cannot be compared",
        )
    return expected

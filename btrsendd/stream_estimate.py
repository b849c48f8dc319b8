"""How big a backup's send stream will probably be, and on what grounds: the total its
progress shows with a ``~`` (``progress.Total``).

A send stream's size is known only once it has ended.  The best guide is the source's own
history: the last backup of the same kind (fulls grow slowly, incrementals repeat a day's
churn).  A first full backup has no history; the used space of the source's filesystem is
then the guess: cheap (one ``statvfs``, where ``btrfs filesystem du`` would walk every file
before the first byte is sent), too high when other subvolumes share the filesystem, too low
where btrfs compresses (a stream carries the data uncompressed).  The line says which it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from btrsendd.catalog import Catalog
from btrsendd.model import Kind
from btrsendd.progress import Total


def estimate_stream(
    catalog: Catalog, source: str, kind: Kind, snapshot: Path | None
) -> Total | None:
    """The likely raw size of ``source``'s next ``kind`` stream, sent from ``snapshot`` (None
    for a stream read from stdin); None when there is nothing to go by."""
    same_kind = [r for r in catalog.backups(source) if r.kind == kind]
    if same_kind:
        last = same_kind[-1]
        return Total(last.raw_bytes, f"the last {kind} backup, {last.date}")
    if kind != "full" or snapshot is None:
        return None
    try:
        fs = os.statvfs(snapshot)
    except OSError:
        return None
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    return Total(used, "the space used on the source's filesystem") if used > 0 else None

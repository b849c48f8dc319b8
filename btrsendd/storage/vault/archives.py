"""What a vault archive is to btrsendd: its size limits, the description that names its key,
and its entry in a vault inventory.

Vaults know no keys: every upload becomes an archive with an opaque id.  Each archive's
description names its key, so the key -> archive index can be rebuilt from an inventory on
a machine that has nothing but the vault and the credentials.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from btrsendd.storage.common import check_key
from btrsendd.strictjson import (
    Invalid,
    Object,
    a_string,
    integer,
    loads,
    printable,
    show,
    text,
    timestamp,
)

MiB = 1024**2
GiB = 1024**3

#: The vault's multipart rules: one part size for the whole upload, a power of two MiB from
#: 1 MiB to 4 GiB, every part but the last exactly that size, 10,000 parts at most.
MIN_PART_SIZE = MiB
MAX_PART_SIZE = 4 * GiB
MAX_PARTS = 10_000

#: Archive descriptions: at most 1,024 characters, printable ASCII only.
MAX_DESCRIPTION = 1024
DESCRIPTION_FORMAT = 1
#: SHA-256 tree hashes, as the vault reports them in inventories.
_TREE_HASH_RE = re.compile(r"[0-9a-f]{64}")

#: What ``list`` reports as the class of every archive, so catalogs and price estimates can
#: tell vault archives from S3's GLACIER class (whose Bulk retrievals are free; a vault's
#: are not).
STORAGE_CLASS = "GLACIER_VAULT"


@dataclass(frozen=True)
class Archive:
    """One key's archive as the index knows it."""

    key: str
    archive_id: str
    size: int
    tree_hash: str
    created_at: str


def now() -> str:
    """The time to record for an archive created (or a job requested) now."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def is_part_size(size: int) -> bool:
    """Whether the vault accepts ``size`` as a multipart part size."""
    return MIN_PART_SIZE <= size <= MAX_PART_SIZE and size % MiB == 0 and _power_of_two(size)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def choose_part_size(volume_size: int, preferred: int | None = None) -> int:
    """The part size for archives of up to about ``volume_size`` bytes.

    The smallest power of two MiB that is at least ``preferred`` (rounded up) and fits a
    volume into 10,000 parts.  The part size is fixed when an upload starts, before the
    stream's length is known, so it is chosen from the largest volume the pipeline makes;
    compressed and encrypted bytes of incompressible data slightly outgrow the raw volume,
    hence the headroom of 1/64 and 1 MiB.
    """
    largest = volume_size + volume_size // 64 + MiB
    wanted = min(preferred or 0, MAX_PART_SIZE)
    size = MIN_PART_SIZE
    while size < wanted or size * MAX_PARTS < largest:
        size *= 2
    if size > MAX_PART_SIZE:
        raise ValueError(
            f"volumes of {volume_size} bytes do not fit into {MAX_PARTS} parts of at most "
            f"{MAX_PART_SIZE} bytes; lower pipeline.volume_size"
        )
    return size


def archive_description(key: str) -> str:
    """The description that names ``key``'s archive, for rebuilding the index from an inventory.

    Only the key is in it: the description is fixed when an upload starts, before the size
    or any digest is known, and the inventory reports size and tree hash anyway.
    """
    text = json.dumps({"btrsendd": DESCRIPTION_FORMAT, "key": key}, separators=(",", ":"))
    if len(text) > MAX_DESCRIPTION or not all(" " <= c <= "~" for c in text):
        raise ValueError(
            f"object key {key!r} is too long for a Glacier archive description "
            f"({len(text)} of at most {MAX_DESCRIPTION} characters); shorten storage.prefix"
        )
    return text


def key_from_description(description: str) -> str | None:
    """The key a btrsendd archive description names; None for anyone else's archive, and
    for one that names no safe, printable key (the key becomes a path on restore)."""
    try:
        # surrogatepass: a string from JSON can hold lone surrogates, which are not UTF-8.
        doc = loads(description.encode("utf-8", "surrogatepass"))
    except Invalid:
        return None
    if not isinstance(doc, dict) or doc.get("btrsendd") != DESCRIPTION_FORMAT:
        return None
    key = doc.get("key")
    if not isinstance(key, str) or not key.isprintable():
        return None
    try:
        return check_key(key)
    except ValueError:
        return None


def inventory_archive(entry: Object) -> Archive | None:
    """The archive an inventory entry describes; None if it is not btrsendd's.

    Raises ``Invalid`` for an entry that claims to be btrsendd's (its description holds the
    ``"btrsendd"`` marker) but names no safe key, or whose fields have the wrong types:
    skipped with a warning, since its key cannot be trusted with a path.
    """
    description = entry.opt("ArchiveDescription", a_string, may_be_absent=True)
    key = None if description is None else key_from_description(description)
    if key is None:
        if description is not None and '"btrsendd"' in description:
            raise Invalid(
                entry.field("ArchiveDescription"),
                f"{show(description)} names no object key this btrsendd can use",
            )
        return None
    return Archive(
        key,
        entry.req("ArchiveId", printable),
        entry.req("Size", integer(0, MAX_PARTS * MAX_PART_SIZE)),
        entry.req("SHA256TreeHash", text(_TREE_HASH_RE, "a tree hash (64 lowercase hex digits)")),
        entry.req("CreationDate", timestamp),
    )

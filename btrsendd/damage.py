"""Checks of stored volumes that cost no retrieval: are they there, whole and unchanged?

``restore`` runs them before it spends anything, ``verify`` for every backup.  A volume is
checked by what the storage reports for free (``Storage.free_check``): a listing gives sizes;
a HEAD request gives S3's checksum of the object, recorded at upload; on the local backend,
reading a file is free, so it is hashed again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from btrsendd.layout import Located
from btrsendd.pipeline.readers import sha256_of
from btrsendd.storage.base import Storage, same_checksum


@dataclass(frozen=True)
class Damage:
    """A volume that is not stored as recorded."""

    volume: Located
    problem: str

    def __str__(self) -> str:
        return f"{self.volume.describe()}: {self.problem}"


def listed_sizes(storage: Storage, volumes: Sequence[Located]) -> dict[str, int]:
    """The stored size of every object in the volumes' backup directories.

    One listing per backup directory: as cheap on S3 as on a disk, and no retrieval.
    """
    sizes: dict[str, int] = {}
    for directory in dict.fromkeys(v.key.rpartition("/")[0] for v in volumes):
        sizes.update((o.key, o.size) for o in storage.list(directory + "/"))
    return sizes


def stored_damage(volumes: Sequence[Located], sizes: Mapping[str, int]) -> list[Damage]:
    """Volumes missing from ``sizes`` (a listing) or stored with another size than recorded."""
    damage = []
    for vol in volumes:
        size = sizes.get(vol.key)
        if size is None:
            damage.append(Damage(vol, "missing from storage"))
        elif size != vol.volume.stored_size:
            damage.append(
                Damage(vol, f"{size} bytes stored, but {vol.volume.stored_size} recorded")
            )
    return damage


def content_damage(storage: Storage, volumes: Sequence[Located], *, rehash: bool) -> list[Damage]:
    """Volumes whose contents are not what was stored.

    ``rehash`` reads every volume, which is free only where reading is (``free_check`` is
    ``"rehash"``: the local backend).
    Otherwise the backend's own checksum is compared where one was recorded at upload: a
    HEAD request each on S3; nothing for a backend that keeps none.
    """
    check = _rehashed if rehash else _checksummed
    return [Damage(v, problem) for v in volumes if (problem := check(storage, v)) is not None]


def _rehashed(storage: Storage, vol: Located) -> str | None:
    with storage.open_read(vol.key, vol.version) as body:
        if sha256_of(body) == vol.volume.stored_sha256:
            return None
    return "its SHA-256 differs from the one recorded when it was backed up"


def _checksummed(storage: Storage, vol: Located) -> str | None:
    recorded = vol.volume.stored_checksum
    if recorded is None:
        return None
    reported = storage.checksum(vol.key, vol.version)
    if same_checksum(recorded, reported):
        return None
    now = "no SHA-256 checksum" if reported is None else f"checksum {reported}"
    return (
        f"the storage's checksum of it is wrong: it reports {now}, but {recorded} was "
        "recorded when it was stored (the object was changed or replaced)"
    )


def free_damage(
    storage: Storage,
    volumes: Sequence[Located],
    *,
    rehash: bool,
    sizes: Mapping[str, int] | None = None,
) -> list[Damage]:
    """Everything wrong with ``volumes`` that can be found without a retrieval.

    ``sizes`` is a listing the caller already holds (by key); without one, the volumes'
    backup directories are listed.
    """
    if sizes is None:
        sizes = listed_sizes(storage, volumes)
    damage = stored_damage(volumes, sizes)
    broken = {d.volume.key for d in damage}
    return damage + content_damage(
        storage, [v for v in volumes if v.key not in broken], rehash=rehash
    )

"""Rebuilding a vault's key -> archive index from a vault inventory.

A machine that has nothing but the vault and the credentials gets its index back this way:
each archive's description names its key (``archives.py``).  An inventory job takes hours on
AWS, and its id is kept in the index, so a second run waits for the same job instead of
paying for another.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial

from btrsendd.errors import OperationalError, StorageError
from btrsendd.log import get_logger
from btrsendd.storage.vault.archives import Archive, inventory_archive
from btrsendd.storage.vault.client import VaultClient
from btrsendd.storage.vault.index import VaultIndex
from btrsendd.strictjson import Invalid, Object, a_list, loads, timestamp

#: An inventory job takes hours on AWS; asking every few minutes is plenty.
INVENTORY_POLL_SECONDS = 600.0


def rebuild_index(
    client: VaultClient,
    index: VaultIndex,
    wait: bool,
    *,
    poll_seconds: float = INVENTORY_POLL_SECONDS,
    timeout: float | None = None,
) -> bool:
    """Rebuild ``index`` from an inventory of ``client``'s vault; True once done.

    Starts an inventory-retrieval job, or resumes the one recorded by an earlier call (a
    job takes hours on AWS, and its id survives in the index so no second one is paid
    for).  Without ``wait`` it returns False while the job runs; run it again later.
    Archives whose descriptions are not btrsendd's are left alone and out of the map.
    """
    what = f"inventory of {client.description}"
    deadline = None if timeout is None else time.monotonic() + timeout
    restarted = False
    while True:
        job_id = index.inventory_job()
        if job_id is None:
            job_id = client._initiate_job(
                what,
                {
                    "Type": "inventory-retrieval",
                    "Format": "JSON",
                    "Description": "btrsendd catalog rebuild",
                },
            )
            index.set_inventory_job(job_id)
        status, message = client._job_status(job_id, what)
        if status == "gone" and not restarted:
            # Output of a job from more than a day ago: ask for a fresh inventory.
            index.set_inventory_job(None)
            restarted = True
            continue
        if status in ("Failed", "gone"):
            index.set_inventory_job(None)
            why = f"failed ({message})" if status == "Failed" else "was lost by the vault"
            raise StorageError(f"{what} failed: the inventory job {why}; run it again")
        if status == "Succeeded":
            _apply_inventory(client, index, job_id, what)
            index.set_inventory_job(None)
            return True
        if not wait:
            return False
        if deadline is not None and time.monotonic() > deadline:
            raise OperationalError(
                f"{what}: the inventory job is still running after {timeout:.0f} s; run "
                "the same command again later (it resumes the same job)"
            )
        time.sleep(poll_seconds)


def _apply_inventory(client: VaultClient, index: VaultIndex, job_id: str, what: str) -> None:
    with client._translate(what):
        raw = client._retrying(what, partial(client._job_output, job_id))
    try:
        doc = Object(loads(raw), "", "an inventory")
        date = doc.req("InventoryDate", timestamp)
        entries = doc.req("ArchiveList", a_list)
    except Invalid as exc:
        raise StorageError(f"{what} failed: unreadable inventory ({exc})") from None
    found: list[Archive] = []
    skipped = 0
    for n, entry in enumerate(entries):
        try:
            archive = inventory_archive(Object(entry, f"ArchiveList[{n}]"))
        except Invalid as exc:
            get_logger().warning("vault.archive_skipped", vault=client.vault, reason=str(exc))
            skipped += 1
            continue
        if archive is not None:
            found.append(archive)
    # Two archives for one key: the newer one is the key's current content.
    newest: dict[str, Archive] = {}
    for archive in sorted(found, key=lambda a: datetime.fromisoformat(a.created_at)):
        newest[archive.key] = archive
    kept = index.replace_from_inventory(list(newest.values()), date)
    get_logger().info(
        "vault.inventory",
        vault=client.vault,
        inventory_date=date,
        archives=len(newest),
        superseded=len(found) - len(newest),
        skipped=skipped,
        foreign=len(entries) - len(found) - skipped,
        newer_kept=kept,
    )

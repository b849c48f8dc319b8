"""What a restore will read, request, pay and wait for, worked out before anything is spent.

``RestoreJob.plan`` builds it from the job's survey (``restore.py``) and the price table
(``pricing.py``); the command line shows it: ``restore`` before it asks to go on, ``verify
--deep`` as its warning.  It is data, not text: the numbers and tiers, so the one place that
words them is the command that prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from btrsendd.layout import Located
from btrsendd.model import Backup, RestoreRequest
from btrsendd.pricing import Fetch, Prices

if TYPE_CHECKING:
    from btrsendd.restore import Survey


@dataclass(frozen=True)
class TierOption:
    """Thawing the objects still to request at one tier: how long, and what in all."""

    tier: str
    #: The expected waits of the storage classes involved (``Prices.waits``).
    waits: list[str]
    #: Estimated USD for thawing at this tier and downloading every object.
    cost: float


@dataclass(frozen=True)
class RestorePlan:
    """A restore's chain, where its objects stand, and the costs of going on."""

    chain: list[Backup]
    objects: int
    stored_bytes: int
    readable: int
    #: Being thawed: requested by an earlier run, or by anyone.
    pending: int
    #: This host's recorded requests for the pending objects.
    requests: list[RestoreRequest]
    to_request: int
    #: The tier asked for (``--tier``).
    tier: str
    #: Estimated USD for downloading everything when nothing is left to request (0 when
    #: the storage charges nothing).
    download_cost: float
    #: When something is to be requested: every tier all its storage classes offer,
    #: fastest first.
    options: list[TierOption]
    #: How many days a thawed copy stays readable.
    thawed_days: int


def plan_restore(
    chain: list[Backup],
    volumes: Sequence[Located],
    survey: Survey,
    prices: Prices,
    tier: str,
    thawed_days: int,
) -> RestorePlan:
    """The plan of restoring ``chain`` (whose ``volumes`` stand as ``survey`` says) at
    ``tier``; a ``UsageError`` if a storage class to thaw has no such tier."""
    to_request = {v.key for v in survey.to_request}
    fetches = [
        Fetch(v.backup.storage_class, v.volume.stored_size, v.key in to_request) for v in volumes
    ]
    options: list[TierOption] = []
    if to_request:
        prices.waits(fetches, tier)  # a --tier the storage class lacks fails here
        classes = {v.backup.storage_class for v in survey.to_request}
        options = [
            TierOption(option, prices.waits(fetches, option), prices.estimate(fetches, option))
            for option in prices.tiers(classes)
        ]
    return RestorePlan(
        chain=chain,
        objects=len(volumes),
        stored_bytes=sum(v.volume.stored_size for v in volumes),
        readable=len(survey.readable),
        pending=len(survey.pending),
        requests=list(survey.requests.values()),
        to_request=len(survey.to_request),
        tier=tier,
        download_cost=0.0 if to_request else prices.estimate(fetches, tier),
        options=options,
        thawed_days=thawed_days,
    )

"""What a restore costs and how long it waits, per storage class and retrieval tier.

Approximate AWS list prices (us-east-1, USD) as published in 2025; they change, so the
numbers are shown as estimates.  Restoring is where cold storage gets expensive: the seed's
README warned of "an absurdly high bill", which is why ``restore`` prints this before it
spends anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from btrsendd.errors import UsageError

GIB = 1024**3
TRANSFER_OUT_PER_GB = 0.09  # internet egress; free when restoring inside the same region


@dataclass(frozen=True)
class Retrieval:
    per_gb: float
    per_1000_requests: float
    wait: str


# storage class -> tier -> price; classes missing here are read immediately at no retrieval cost.
RETRIEVAL: dict[str, dict[str, Retrieval]] = {
    "DEEP_ARCHIVE": {
        "Standard": Retrieval(0.02, 0.10, "within 12 hours"),
        "Bulk": Retrieval(0.0025, 0.025, "within 48 hours"),
    },
    "GLACIER": {
        "Expedited": Retrieval(0.03, 10.00, "1-5 minutes"),
        "Standard": Retrieval(0.01, 0.05, "3-5 hours"),
        "Bulk": Retrieval(0.0, 0.0, "5-12 hours"),
    },
    "GLACIER_IR": {
        "Standard": Retrieval(0.03, 0.0, "immediate"),
        "Bulk": Retrieval(0.03, 0.0, "immediate"),
        "Expedited": Retrieval(0.03, 0.0, "immediate"),
    },
}


def retrieval(storage_class: str, tier: str) -> Retrieval | None:
    """The price of thawing ``storage_class`` at ``tier``; None if it needs no thawing."""
    tiers = RETRIEVAL.get(storage_class)
    if tiers is None:
        return None
    if tier not in tiers:
        raise UsageError(
            f"{storage_class} cannot be restored with tier {tier}; use --tier "
            + " or --tier ".join(sorted(tiers))
        )
    return tiers[tier]


def estimate(storage_class: str, tier: str, stored_bytes: int, objects: int) -> float:
    """Estimated USD for retrieving and downloading ``objects`` totalling ``stored_bytes``."""
    gb = stored_bytes / GIB
    price = retrieval(storage_class, tier)
    cost = 0.0 if storage_class == "local" else gb * TRANSFER_OUT_PER_GB
    if price is not None:
        cost += gb * price.per_gb + objects / 1000 * price.per_1000_requests
    return cost

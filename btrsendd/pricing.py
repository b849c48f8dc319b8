"""What storing and restoring cost, and how long a restore waits, per storage class and tier.

Approximate AWS list prices (us-east-1, USD) as published in 2025; they change and differ by
region, so the numbers are shown as estimates and ``[restore]`` in the configuration can
override every one of them.  Restoring is where cold storage gets expensive: btrsend's README
warned of "an absurdly high bill", which is why ``restore`` prints this before it spends
anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from btrsendd.errors import UsageError

if TYPE_CHECKING:
    from btrsendd.config import RestoreConfig

GIB = 1024**3

#: Internet egress per GB; free when restoring inside the bucket's region (set it to 0 then).
TRANSFER_OUT_PER_GB = 0.09

#: The storage class the local backend records: no retrieval, no transfer, no cost.
LOCAL_CLASS = "local"

#: Storing, USD per GB-month (AWS bills GB as 2^30 bytes).  GLACIER and DEEP_ARCHIVE also
#: bill ~40 KB of overhead per object, which volumes of hundreds of MiB make negligible.
#: INTELLIGENT_TIERING is priced at its frequent tier, an upper bound.
STORAGE_PER_GB_MONTH: Mapping[str, float] = {
    "STANDARD": 0.023,
    "INTELLIGENT_TIERING": 0.023,
    "STANDARD_IA": 0.0125,
    "ONEZONE_IA": 0.01,
    "GLACIER_IR": 0.004,
    "GLACIER": 0.0036,
    "DEEP_ARCHIVE": 0.00099,
    "GLACIER_VAULT": 0.0036,
    LOCAL_CLASS: 0.0,
}

#: Minimum storage durations (days): deleting earlier is billed as if kept this long.
MINIMUM_STORAGE_DAYS: Mapping[str, int] = {
    "DEEP_ARCHIVE": 180,
    "GLACIER": 90,
    "GLACIER_IR": 90,
    "STANDARD_IA": 30,
    "ONEZONE_IA": 30,
    "GLACIER_VAULT": 90,
}

#: Days in the month AWS prorates storage by.
_DAYS_PER_MONTH = 30


def monthly_cost(storage_class: str, stored_bytes: int) -> float | None:
    """Estimated USD per month for keeping ``stored_bytes`` in ``storage_class``."""
    price = STORAGE_PER_GB_MONTH.get(storage_class)
    return None if price is None else stored_bytes / GIB * price


def early_deletion_cost(storage_class: str, stored_bytes: int, age_days: int) -> float:
    """What deleting ``stored_bytes`` stored ``age_days`` ago costs on top: the rest of the
    class's minimum duration, billed as if kept (0 past it, or for a class without one)."""
    remaining = MINIMUM_STORAGE_DAYS.get(storage_class, 0) - age_days
    monthly = monthly_cost(storage_class, stored_bytes) or 0.0
    return max(remaining, 0) / _DAYS_PER_MONTH * monthly


#: Tiers from fastest (dearest) to slowest (cheapest): the order the plan lists them in.
TIERS = ("Expedited", "Standard", "Bulk")


@dataclass(frozen=True)
class Retrieval:
    """Thawing one archived class at one tier: per GB, per 1,000 requests, and the wait."""

    per_gb: float
    per_1000_requests: float
    wait: str


#: Classes whose objects need a restore request (a thaw) before they can be read.
THAW: Mapping[str, Mapping[str, Retrieval]] = {
    "DEEP_ARCHIVE": {
        "Standard": Retrieval(0.02, 0.10, "within 12 hours"),
        "Bulk": Retrieval(0.0025, 0.025, "within 48 hours"),
    },
    "GLACIER": {
        "Expedited": Retrieval(0.03, 10.00, "1-5 minutes"),
        "Standard": Retrieval(0.01, 0.05, "3-5 hours"),
        "Bulk": Retrieval(0.0, 0.0, "5-12 hours"),
    },
    # The legacy vault API (glacier-vault backend): like GLACIER, but Bulk is not free.
    "GLACIER_VAULT": {
        "Expedited": Retrieval(0.03, 10.00, "1-5 minutes"),
        "Standard": Retrieval(0.01, 0.05, "3-5 hours"),
        "Bulk": Retrieval(0.0025, 0.025, "5-12 hours"),
    },
}

#: Classes read at once but billed per GB read.
READ_FEE_PER_GB: Mapping[str, float] = {
    "GLACIER_IR": 0.03,
    "STANDARD_IA": 0.01,
    "ONEZONE_IA": 0.01,
}


@dataclass(frozen=True)
class Fetch:
    """One object a restore reads: its class, its stored size, and whether it needs a thaw."""

    storage_class: str
    size: int
    needs_thaw: bool


@dataclass(frozen=True)
class Prices:
    """The price table in force: the built-in one with the configuration's overrides."""

    thaw: Mapping[str, Mapping[str, Retrieval]]
    read_fee_per_gb: Mapping[str, float]
    transfer_out_per_gb: float

    @classmethod
    def from_config(cls, cfg: RestoreConfig) -> Prices:
        """Built-in prices, each overridden field by field from ``[restore]``."""
        thaw = {storage_class: dict(tiers) for storage_class, tiers in THAW.items()}
        for storage_class, tiers in cfg.prices.items():
            for tier, override in tiers.items():
                base = thaw[storage_class][tier]
                thaw[storage_class][tier] = replace(base, **override.model_dump(exclude_none=True))
        fees: dict[str, float] = dict(READ_FEE_PER_GB)
        fees.update(cfg.read_fee_per_gb.items())
        return cls(thaw=thaw, read_fee_per_gb=fees, transfer_out_per_gb=cfg.transfer_out_per_gb)

    def tiers(self, storage_classes: Iterable[str]) -> list[str]:
        """The tiers every one of ``storage_classes`` can be thawed with, fastest first."""
        offered = [set(self.thaw.get(c, {})) for c in storage_classes]
        return [t for t in TIERS if all(t in tiers for tiers in offered)]

    def retrieval(self, storage_class: str, tier: str) -> Retrieval:
        """The price of thawing ``storage_class`` at ``tier``; a usage error if it has no such
        tier (DEEP_ARCHIVE has no Expedited)."""
        tiers = self.thaw.get(storage_class, {})
        if tier not in tiers:
            raise UsageError(
                f"{storage_class} cannot be restored with tier {tier}; use --tier "
                + " or --tier ".join(t for t in TIERS if t in tiers)
            )
        return tiers[tier]

    def waits(self, fetches: Iterable[Fetch], tier: str) -> list[str]:
        """The expected waits at ``tier`` of the classes among ``fetches`` that need a thaw."""
        classes = sorted({f.storage_class for f in fetches if f.needs_thaw})
        return sorted({self.retrieval(c, tier).wait for c in classes})

    def estimate(self, fetches: Iterable[Fetch], tier: str) -> float:
        """Estimated USD for thawing (at ``tier``) and downloading ``fetches``."""
        cost = 0.0
        for f in fetches:
            if f.storage_class == LOCAL_CLASS:
                continue
            gb = f.size / GIB
            cost += gb * (self.transfer_out_per_gb + self.read_fee_per_gb.get(f.storage_class, 0))
            if f.needs_thaw:
                price = self.retrieval(f.storage_class, tier)
                cost += gb * price.per_gb + price.per_1000_requests / 1000
        return cost

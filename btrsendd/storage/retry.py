"""Retry with exponential backoff, jitter and a time budget.

A backup over a home uplink meets every kind of transient trouble: an endpoint restarting,
throttling, a NAT box resetting connections, a read that stalls.  Each request is tried again
until it succeeds or a time budget is spent; only then does the failure reach the user, who
learns what the endpoint last said and how long it was tried.  The budget (not a count of
attempts) is what bounds an outage's cost: a cycle either rides it out or fails within a known
time, and the next cycle resumes from what was stored.

Backoff doubles per attempt up to a cap; jitter spreads the retries of concurrent requests
(multipart parts) so that they do not hammer a recovering endpoint in lockstep.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Called before each wait with the failure, the number of the attempt that failed (1-based)
#: and the delay about to be slept: for logging.
OnRetry = Callable[[Exception, int, float], None]


def no_jitter(delay: float) -> float:
    """Wait exactly the backoff delay (predictable, for callers that retry alone)."""
    return delay


def equal_jitter(delay: float) -> float:
    """Half the delay fixed, half random: spreads concurrent retries, never waits near zero."""
    return delay / 2 + random.uniform(0, delay / 2)


def retry_call(
    func: Callable[[], T],
    *,
    retryable: Callable[[Exception], bool],
    base_delay: float,
    max_delay: float = math.inf,
    attempts: int | None = None,
    budget: float = math.inf,
    jitter: Callable[[float], float] = no_jitter,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``func`` until it returns, retrying while it raises a ``retryable`` exception.

    Waits ``base_delay``, then twice that, and so on up to ``max_delay`` (each passed through
    ``jitter``).  Gives up after ``attempts`` calls, or once ``budget`` seconds have passed
    since the first failure (the last wait is shortened so that one more attempt happens right
    at the end of the budget), whichever comes first.

    The last failure, or the first that is not retryable, propagates unchanged so callers
    report the real cause; when retrying gave up, a note on it (``__notes__``) says after how
    many attempts and how long.
    """
    failed_at: float | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            return func()
        except Exception as exc:
            if not retryable(exc):
                raise
            now = clock()
            if failed_at is None:
                failed_at = now
            remaining = failed_at + budget - now
            if (attempts is not None and attempt >= attempts) or remaining <= 0:
                plural = "s" if attempt > 1 else ""
                exc.add_note(f"gave up after {attempt} attempt{plural} in {now - failed_at:.0f} s")
                raise
            # min() before the power keeps 2**n a float that cannot overflow.
            delay = min(jitter(min(base_delay * 2 ** min(attempt - 1, 60), max_delay)), remaining)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
        sleep(delay)

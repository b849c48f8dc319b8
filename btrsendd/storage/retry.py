"""Retry with exponential backoff, for operations worth more than one HTTP request.

botocore already retries each request; this outer loop exists for work that is expensive to
lose as a whole (a multipart part that took minutes to read from the pipeline) and for
failures botocore gives up on quickly (an endpoint restarting, a proxy resetting connections).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_call(
    func: Callable[[], T],
    *,
    attempts: int,
    base_delay: float,
    retryable: Callable[[Exception], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``func`` up to ``attempts`` times while it raises a ``retryable`` exception.

    Waits ``base_delay``, then twice that, and so on between attempts.  The last failure, or
    the first one that is not retryable, propagates unchanged so callers report the real cause.
    """
    for attempt in range(attempts - 1):
        try:
            return func()
        except Exception as exc:
            if not retryable(exc):
                raise
        sleep(base_delay * 2**attempt)
    return func()

"""How the AWS backends (S3, Glacier vaults) read botocore's errors and retry requests.

One place decides what a failure means: which errors are worth another try (the network, a
5xx, throttling) and which words from the endpoint reach the user's one-line message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from functools import partial
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.errors import StorageError
from btrsendd.log import get_logger
from btrsendd.storage.retry import equal_jitter, retry_call

T = TypeVar("T")

#: How long a failing request keeps being retried, counted from its first failure: long
#: enough to ride out an endpoint restart, throttling or a flapping uplink, short enough that
#: an outage fails the cycle within minutes instead of hanging it; the next cycle resumes from
#: the last stored volume.
RETRY_BUDGET = 300.0
#: The first wait between attempts; it doubles per attempt up to ``RETRY_MAX_DELAY``, with
#: jitter so that concurrent parts do not retry in lockstep.
RETRY_DELAY = 1.0
RETRY_MAX_DELAY = 30.0
#: Aborting an upload follows a failure already being reported and is best effort: a few
#: quick tries, so an outage is reported without spending the budget a second time.
ABORT_ATTEMPTS = 3

#: The advice both backends give for missing or rejected credentials.
NO_CREDENTIALS = (
    "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, configure "
    "~/.aws/credentials or use an instance role"
)
CHECK_CREDENTIALS = "check the AWS credentials (environment, ~/.aws, instance role)"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def cause(exc: Exception) -> str:
    """The endpoint's own words for a failure: its error code and message, or the network's
    (never request details, which may carry signed headers)."""
    if isinstance(exc, ClientError):
        message = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
        return f"{error_code(exc)}: {message}"
    return str(exc)


def is_transient(exc: Exception, codes: Collection[str]) -> bool:
    """Whether trying the same request again may succeed: network trouble (``IncompleteRead``
    is a body cut short mid-download), a 5xx, 429, or one of the service's retryable
    ``codes``."""
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status == 429 or error_code(exc) in codes
    return False


def log_retry(what: str, exc: Exception, attempt: int, delay: float) -> None:
    """The ``storage.retrying`` warning both backends log before another try."""
    get_logger().warning(
        "storage.retrying", operation=what, error=cause(exc), attempt=attempt, delay=round(delay, 1)
    )


class AwsRequests:
    """What both AWS backends do around a request: retry it within a budget, then explain.

    A backend sets the retry attributes and says, in ``_error``, what a failure means for
    its service and ``_retryable``, which failures are worth another try.
    """

    #: Seconds one request may keep retrying (``storage.retry_budget``).
    retry_budget: float
    #: The first wait between tries, doubling up to ``retry_max_delay``.
    retry_delay: float
    retry_max_delay: float

    def _error(self, what: str, exc: Exception) -> StorageError:
        raise NotImplementedError

    def _retryable(self, exc: Exception) -> bool:
        raise NotImplementedError

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn botocore's exceptions inside the block into ``StorageError``."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._error(what, exc) from exc

    def _retrying(
        self,
        what: str,
        func: Callable[[], T],
        *,
        attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """``func()`` (one request), retried on transient failures within the budget;
        ``sleep`` waits between tries (a ranged download's wait ends when it is closed)."""
        return retry_call(
            func,
            retryable=self._retryable,
            base_delay=self.retry_delay,
            max_delay=self.retry_max_delay,
            attempts=attempts,
            budget=self.retry_budget,
            jitter=equal_jitter,
            on_retry=partial(log_retry, what),
            sleep=sleep,
        )

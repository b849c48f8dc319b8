"""How the AWS backends (S3, Glacier vaults) read botocore's errors.

One place decides what a failure means: which errors are worth another try (the network, a
5xx, throttling) and which words from the endpoint reach the user's one-line message.
"""

from __future__ import annotations

from collections.abc import Collection

from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.log import get_logger


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

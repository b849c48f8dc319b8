"""The endpoint URLs the AWS backends accept (``storage.endpoint_url``): ones that carry no
secret.

The URL is printed by check-config and status and may reach logs and error messages; a
secret in it would leak through all of them.  The messages never repeat the URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_CREDENTIAL_CHAIN = (
    "give btrsendd its keys through the AWS credential chain instead: AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY in its environment, or ~/.aws/credentials"
)


def no_secrets_in_url(url: str | None) -> str | None:
    """Return ``url`` if it is a plain http(s) URL; ``ValueError`` if it may carry a secret."""
    if url is None:
        return None
    if "@" in url:
        raise ValueError(
            "holds credentials (user:password@ before the host); remove them, and "
            + _CREDENTIAL_CHAIN
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError('is not a URL like "https://HOST" or "http://HOST:PORT"')
    if parts.query or parts.fragment:
        raise ValueError(
            "has a query string or fragment, which an endpoint never needs and which can only "
            "carry secrets here; remove everything from '?' (or '#') on, and " + _CREDENTIAL_CHAIN
        )
    return url

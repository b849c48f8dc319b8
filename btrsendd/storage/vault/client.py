"""One Glacier vault's client, as the storage, its uploads, downloads and inventories share
it: the boto3 client, its retries, what its errors mean, and the job and archive requests.

Credentials come from boto3's standard chain (environment, ``~/.aws``, instance role), never
from arguments.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from btrsendd.errors import StorageError
from btrsendd.storage.awserrors import (
    CHECK_CREDENTIALS,
    NO_CREDENTIALS,
    RETRY_BUDGET,
    RETRY_DELAY,
    RETRY_MAX_DELAY,
    AwsRequests,
    cause,
    error_code,
    is_transient,
)
from btrsendd.storage.ranged import WrongLength
from btrsendd.storage.throttle import UNLIMITED, Throttle

if TYPE_CHECKING:
    from mypy_boto3_glacier import GlacierClient
    from mypy_boto3_glacier.type_defs import JobParametersTypeDef

#: Error codes that mean "the credentials are wrong or may not do this".
_ACCESS_CODES = frozenset(
    {
        "403",
        "AccessDeniedException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
    }
)
_TRANSIENT_CODES = frozenset({"RequestTimeoutException", "ThrottlingException"})
NOT_FOUND = "ResourceNotFoundException"


class DamagedRange(StorageError):
    """A downloaded range that is short or fails its tree hash: fetched again, then reported."""


class VaultClient(AwsRequests):
    """Requests to one vault.

    Retrying is done here, as in the S3 backend (``awserrors``): every request under
    ``retry_budget`` seconds from its first failure, waits starting at ``retry_delay``;
    ``max_attempts`` is botocore's own total per request, 1 so that the layers do not
    multiply.
    """

    def __init__(
        self,
        vault: str,
        *,
        region: str,
        endpoint_url: str | None,
        concurrency: int,
        max_attempts: int = 1,
        retry_budget: float = RETRY_BUDGET,
        retry_delay: float = RETRY_DELAY,
        throttle: Throttle = UNLIMITED,
    ) -> None:
        self.vault = vault
        #: Paces every byte sent, by every part at once (``pipeline.rate_limit``).
        self.throttle = throttle
        self.region = region
        self.endpoint_url = endpoint_url
        self.retry_budget = retry_budget
        self.retry_delay = retry_delay
        self.retry_max_delay = RETRY_MAX_DELAY
        self.description = f"Glacier vault {vault} in {region}" + (
            f" at {endpoint_url}" if endpoint_url else ""
        )
        config = Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=max(10, concurrency + 1),
        )
        # One client for all threads: boto3 clients are thread-safe (sessions are not).
        self._client: GlacierClient = boto3.session.Session().client(
            "glacier", region_name=region, endpoint_url=endpoint_url, config=config
        )

    def _name(self, key: str) -> str:
        return f"{key} in vault {self.vault}"

    # -- errors ----------------------------------------------------------------------------

    def _error(self, what: str, exc: Exception) -> StorageError:
        """One line for the user; only the service's code and message, never request details."""
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, ClientError):
            code = error_code(exc)
            message = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
            if code == "VaultNotFound" or (code == NOT_FOUND and "vault" in message.lower()):
                return StorageError(
                    f"{what} failed: vault {self.vault!r} does not exist in {self.region}"
                    + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                    + ": fix storage.vault or storage.region (btrsendd uses existing vaults "
                    "and never creates one)"
                )
            if code in _ACCESS_CODES:
                return StorageError(
                    f"{what} failed: access denied ({cause(exc)}); {CHECK_CREDENTIALS} and "
                    "that their policy allows glacier:* on the vault"
                )
            if code == "InsufficientCapacityException":
                return StorageError(
                    f"{what} failed: no Expedited retrieval capacity right now; use --tier "
                    "Standard or Bulk, or buy provisioned capacity"
                )
            return StorageError(f"{what} failed: {cause(exc)}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{what} failed: {NO_CREDENTIALS}")
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            endpoint = self.endpoint_url or f"Glacier in {self.region}"
            return StorageError(f"{what} failed: cannot reach {endpoint}: {exc}")
        return StorageError(f"{what} failed: {exc}")

    def _retryable(self, exc: Exception) -> bool:
        """Retryable AWS failures, and a damaged or cut download range (fetched again)."""
        return isinstance(exc, DamagedRange | WrongLength) or is_transient(exc, _TRANSIENT_CODES)

    # -- archives and jobs -----------------------------------------------------------------

    def _delete_archive(self, archive_id: str) -> None:
        """Delete one archive; one already gone is not an error (deletion is retried)."""
        what = f"deleting archive {archive_id} from {self.description}"
        try:
            self._retrying(
                what,
                lambda: self._client.delete_archive(vaultName=self.vault, archiveId=archive_id),
            )
        except ClientError as exc:
            if error_code(exc) != NOT_FOUND:
                raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc

    def _initiate_job(self, what: str, parameters: JobParametersTypeDef) -> str:
        """Start a job (an archive's or the inventory's retrieval); returns its id."""
        start = partial(self._client.initiate_job, vaultName=self.vault, jobParameters=parameters)
        with self._translate(what):
            return self._retrying(what, start)["jobId"]

    def _job_status(self, job_id: str, what: str) -> tuple[str, str]:
        """(status, message) of a job; status ``gone`` once the vault has forgotten it (job
        output is kept for at least 24 hours after the job completes)."""
        try:
            job = self._retrying(
                what, lambda: self._client.describe_job(vaultName=self.vault, jobId=job_id)
            )
        except ClientError as exc:
            if error_code(exc) == NOT_FOUND:
                return "gone", ""
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc
        return str(job.get("StatusCode", "InProgress")), str(job.get("StatusMessage") or "")

    def _job_output(self, job_id: str) -> bytes:
        response = self._client.get_job_output(vaultName=self.vault, jobId=job_id)
        with contextlib.closing(response["body"]) as body:
            return body.read()

    def check_access(self) -> None:
        """Fail early, with advice, when the vault is missing or the credentials are wrong."""
        with self._translate(f"access check on {self.description}"):
            self._client.describe_vault(vaultName=self.vault)

"""What the storage tests share with each other and with the fault tests: a reader that
dribbles like a pipe, botocore's error answers without a server, a raw Glacier client."""

from __future__ import annotations

import io
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.fixtures.s3servers import REGION


class Dribble:
    """A reader that returns short reads, like a pipe, and can fail after some bytes."""

    def __init__(self, data: bytes, step: int = 7000, fail_after: int | None = None) -> None:
        self.data = io.BytesIO(data)
        self.step = step
        self.fail_after = fail_after

    def read(self, size: int = -1, /) -> bytes:
        if self.fail_after is not None and self.data.tell() >= self.fail_after:
            raise OSError("simulated pipeline failure")
        return self.data.read(min(self.step, size if size >= 0 else self.step))


def client_error(code: str, status: int, operation: str = "UploadPart") -> ClientError:
    """What botocore raises for an error answer, without a server having to send one."""
    response: Any = {
        "Error": {"Code": code, "Message": f"injected {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def glacier(endpoint_url: str) -> Any:
    """A raw client for talking to a vault server behind the backend's back."""
    config = BotoConfig(retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.session.Session().client(
        "glacier", region_name=REGION, endpoint_url=endpoint_url, config=config
    )

"""Credentials in ``storage.endpoint_url`` are refused when the file is loaded, with the fix,
and appear in no output of any command: the URL is printed by check-config and status, and
would otherwise carry the secret into terminals, logs and the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.btrfs import MakeBtrfs
from tests.fixtures.gpg import GpgKey
from tests.fixtures.s3servers import S3Server
from tests.support.world import World, make_world

SECRETS = ("AKIAEXAMPLESECRETID", "wJalrXUtnFEMIexampleSECRETKEY")
COMMANDS = [["check-config"], ["status"], ["backup", "--date", "2000-01-01"], ["list"]]


@pytest.fixture
def world(make_btrfs: MakeBtrfs, gpg_key: GpgKey, tmp_path: Path, moto_server: S3Server) -> World:
    w = make_world(make_btrfs("src", size="300M"), tmp_path, gpg_key, "")
    (w.source / "file.txt").write_text("data\n")
    w.storage = storage(moto_server.endpoint_url, moto_server.new_bucket())
    return w


def storage(endpoint_url: str, bucket: str) -> str:
    return (
        f'backend = "s3"\nbucket = "{bucket}"\nprefix = "host1"\n'
        f'endpoint_url = "{endpoint_url}"\nstorage_class = "STANDARD"'
    )


def with_secret(endpoint_url: str, form: str) -> str:
    scheme, _, rest = endpoint_url.partition("://")
    if form == "userinfo":
        return f"{scheme}://{SECRETS[0]}:{SECRETS[1]}@{rest}"
    return f"{endpoint_url}/?X-Amz-Credential={SECRETS[0]}&X-Amz-Signature={SECRETS[1]}"


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("userinfo", "holds credentials (user:password@ before the host)"),
        ("query", "has a query string or fragment"),
    ],
)
def test_refused_by_every_command_and_printed_by_none(
    world: World, moto_server: S3Server, form: str, text: str
) -> None:
    bucket = world.storage.split('bucket = "')[1].split('"')[0]
    world.storage = storage(with_secret(moto_server.endpoint_url, form), bucket)
    world.write_config()

    for command in COMMANDS:
        proc = world.run(*command, check=False)
        out = proc.stdout.decode() + proc.stderr.decode()
        assert proc.returncode == 2, out
        assert not [s for s in SECRETS if s in out], out
        [line] = [line for line in out.splitlines() if line.startswith("btrsendd: ")]
        assert line.startswith(f"btrsendd: error: {world.config}: storage.endpoint_url: {text}")
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment, or " in line
        assert line.endswith("~/.aws/credentials")
    # Fixed as the message says, the same world backs up.
    world.storage = storage(moto_server.endpoint_url, bucket)
    world.write_config()
    world.run("backup", "--date", "2000-01-01")
    assert [b["state"] for b in world.list()] == ["complete"]


def test_a_clean_endpoint_works_and_is_shown(world: World, moto_server: S3Server) -> None:
    world.write_config()
    host = moto_server.endpoint_url.partition("://")[2]

    for command in COMMANDS:
        world.run(*command)
    assert host in world.run("status").stdout.decode()

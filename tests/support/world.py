"""A small world for end-to-end tests: a source subvolume, a config, and the real CLI.

Tests drive ``btrsendd`` as a user does, as a subprocess with a config file, and assert on
outcomes: what ``list --json`` reports, what is in the bucket, and what a restore produces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.btrfs import make_subvolume
from tests.fixtures.gpg import GpgKey

BTRSENDD = str(Path(sys.executable).with_name("btrsendd"))


@dataclass
class World:
    root: Path  # the source filesystem's mount point
    work: Path  # scratch space outside btrfs: config, state, local archive
    key: GpgKey
    storage: str  # the [storage] section's body
    pipeline: str = 'compression = "zstd"\nvolume_size = "1MiB"'
    schedule: str = "max_incrementals = 2"
    encryption: str | None = None
    metrics: str = ""  # the [metrics] section's body
    extra: str = ""  # appended after the source: more [[sources]], a [hooks] section
    env: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> Path:
        return self.root / "data"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def config(self) -> Path:
        return self.work / "btrsendd.toml"

    def write_config(self) -> Path:
        encryption = self.encryption or (
            f'mode = "gpg"\nrecipients = ["{self.key.fingerprint}"]\n'
            f'gnupg_home = "{self.key.public_home}"'
        )
        self.config.write_text(
            textwrap.dedent(f"""\
                state_dir = "{self.work / "state"}"
                [schedule]
                {{schedule}}
                [snapshots]
                keep_days = 3650
                [pipeline]
                {{pipeline}}
                [encryption]
                {{encryption}}
                [storage]
                {{storage}}
                [metrics]
                {{metrics}}
                [[sources]]
                name = "data"
                path = "{self.source}"
                snapshot_dir = "{self.snapshots}"
                """).format(
                schedule=self.schedule,
                pipeline=self.pipeline,
                encryption=encryption,
                storage=self.storage,
                metrics=self.metrics,
            )
            + self.extra
        )
        self.config.chmod(0o600)
        return self.config

    def run(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the real command line; on unexpected failure show what it printed."""
        if not self.config.exists():
            self.write_config()
        proc = subprocess.run(
            [BTRSENDD, "--config", str(self.config), "--log-format", "json", *args],
            capture_output=True,
            input=input,
            env={**os.environ, **self.env},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"btrsendd {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout.decode()}\n{proc.stderr.decode()}"
            )
        return proc

    def restore_args(self, day: date, target: Path, home: Path | None = None) -> list[str]:
        """``restore`` of ``day`` into ``target`` with a keyring (the test key's by default)."""
        return [
            "restore",
            "--source",
            "data",
            "--date",
            day.isoformat(),
            "--target",
            str(target),
            "--yes",
            "--gnupg-home",
            str(home or self.key.secret_home),
        ]

    def restore(self, day: date, target: Path, *args: str) -> Path:
        """Restore ``day`` into ``target`` (it must work); returns the restored subvolume."""
        self.run(*self.restore_args(day, target), "--tier", "Bulk", *args)
        return target / day.isoformat()

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self.run("list", "--json").stdout)
        return result


def storage_section(backend: str, request: pytest.FixtureRequest, work: Path) -> str:
    """The ``[storage]`` body for ``backend``: local, or a bucket on a session's S3 server."""
    if backend == "local":
        return f'backend = "local"\npath = "{work / "archive"}"'
    server: Any = request.getfixturevalue(f"{backend}_server")
    # moto emulates Glacier semantics (reads fail until restored); SeaweedFS has no cold
    # classes (it refuses restore requests), so it stores STANDARD and checks checksums.
    storage_class = "DEEP_ARCHIVE" if backend == "moto" else "STANDARD"
    return (
        f'backend = "s3"\nbucket = "{server.new_bucket()}"\nprefix = "host1"\n'
        f'endpoint_url = "{server.endpoint_url}"\nstorage_class = "{storage_class}"'
    )


def make_world(root: Path, work: Path, key: GpgKey, storage: str) -> World:
    make_subvolume(root / "data")
    return World(root=root, work=work, key=key, storage=storage)


def local_world(root: Path, work: Path, key: GpgKey) -> World:
    """A world whose archive is the directory ``work / "archive"`` (the local backend)."""
    return make_world(root, work, key, f'backend = "local"\npath = "{work / "archive"}"')

"""The measurements against S3: SeaweedFS on loopback, directly and behind a rate cap.

- The upload sweep: ``backup-stdin`` straight to SeaweedFS against ``pipeline.concurrency``
  and ``pipeline.part_size``, which shows what the uploader and the server can do.
- S3 as on the internet: the full backup and its restore through ``bench.capped_proxy``,
  which caps every TCP connection's rate, against boto3's managed transfer (``bench.plain_s3``)
  moving the same objects through the same proxy with the same concurrency and part size.
  One GET or PUT stream at a time then runs at the cap; only concurrent requests go faster.

SeaweedFS is started as the tests start it (``tests.fixtures.s3servers.weed_mini``), once for
both, with the test suite's fake credentials.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import measure
from bench.dataset import MiB
from bench.suite import Case, Step, Suite
from bench.world import FULL_DAY, SOURCE, World
from tests.fixtures.s3servers import FAKE_CREDENTIALS, REGION, S3Server, weed_mini

#: The upload sweep, (concurrency, part size in MiB): concurrency at the default part size,
#: then part sizes at the default concurrency.
UPLOAD_SETTINGS = ((1, 16), (2, 16), (4, 16), (8, 16), (4, 5), (4, 64))

#: btrsendd's defaults (``pipeline.concurrency``, ``pipeline.part_size``), which the capped
#: runs use and the plain client is given.
CONCURRENCY = 4
PART_SIZE = 16 * MiB

#: The groups of the capped runs, whose targets the report checks.
CAPPED_BACKUP = "S3 backup, capped"
CAPPED_RESTORE = "S3 restore, capped"


@contextlib.contextmanager
def seaweedfs() -> Iterator[S3Server]:
    """SeaweedFS, with the test suite's fake credentials in this process's environment for
    as long as it runs, so that the server (which makes them its admin identity), this
    process's own client and every command started meanwhile use them; a real ``~/.aws`` is
    never read."""
    settings = {
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        with weed_mini(FAKE_CREDENTIALS) as server:
            yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def capped_proxy(server: S3Server, rate: int) -> Iterator[str]:
    """``bench.capped_proxy`` in front of ``server``; yields the endpoint URL to use."""
    upstream = server.endpoint_url.removeprefix("http://")
    argv = [sys.executable, "-m", "bench.capped_proxy", "--upstream", upstream]
    proc = subprocess.Popen(
        [*argv, "--rate", str(rate)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"bench.capped_proxy did not start (exit {proc.poll()})")
        yield f"http://127.0.0.1:{int(port)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _s3_config(world: World, home: Path, bucket: str, endpoint: str, tuning: str = "") -> Path:
    """A config for ``home`` storing in ``bucket`` at ``endpoint``, without compression or
    encryption (the stream goes to the uploader as it is)."""
    storage = (
        f'backend = "s3"\nbucket = "{bucket}"\nendpoint_url = "{endpoint}"\n'
        f'region = "{REGION}"\nstorage_class = "STANDARD"'
    )
    return world.config(
        home,
        compression="none",
        storage=storage,
        encrypt=False,
        extra_pipeline=tuning,
    )


def _empty_bucket(server: S3Server, bucket: str) -> None:
    """Delete a run's objects, so SeaweedFS's disk use does not grow along the runs."""
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


# -- the upload sweep ----------------------------------------------------------------------------


def uploads(suite: Suite, server: S3Server, size: int) -> None:
    """Upload throughput to SeaweedFS over loopback against concurrency and part size.

    Without compression or encryption the stream goes straight to the uploader, so the
    uploader and the server are measured, not the compressor.
    """
    steps = [
        _upload(
            suite,
            server,
            suite.add_case(
                "upload",
                f"concurrency {concurrency}, part {part_mib} MiB",
                "python -m bench.stream SIZE random | btrsendd backup-stdin (S3, no "
                "compression, no encryption)",
                size,
            ),
            size,
            f'part_size = "{part_mib}MiB"\nconcurrency = {concurrency}',
        )
        for concurrency, part_mib in UPLOAD_SETTINGS
    ]
    suite.alternate(steps)


def _upload(suite: Suite, server: S3Server, case: Case, size: int, tuning: str) -> Step:
    def step() -> None:
        bucket = server.new_bucket()
        home = suite.world.fresh_dir("btrsendd-s3")
        config = _s3_config(suite.world, home, bucket, server.endpoint_url, tuning=tuning)
        argv = suite.btrsendd(config, "backup-stdin", "--source", SOURCE, "--date", str(FULL_DAY))
        suite.record(
            case, measure.run_fed(suite.stream(size, "random"), argv, log=suite.log_path(case))
        )
        _empty_bucket(server, bucket)

    return step


# -- S3 with a per-connection cap ----------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    """A full backup stored once, uncapped: what the capped restores read, and the objects
    the plain client moves."""

    bucket: str
    config: Path
    #: The volumes' keys, in order, and local copies of them (for the plain uploads).
    keys: list[str]
    files: list[Path]
    stored_bytes: int


def capped(suite: Suite, server: S3Server, rate: int) -> None:
    """The full backup's upload and its restore's download behind a cap of ``rate`` bytes/s
    per connection, btrsendd against the plain client, alternating as everywhere else.

    btrsendd stores the snapshot without compression or encryption, so the stored objects
    are the send stream itself and the network path is what is measured, not the CPU.
    """
    reference = _store_reference(suite, server)
    with capped_proxy(server, rate) as endpoint:
        # The same state, now reading through the proxy.
        _s3_config(suite.world, reference.config.parent, reference.bucket, endpoint)
        stored = reference.stored_bytes
        plain_up = suite.add_case(
            CAPPED_BACKUP,
            "plain boto3 upload_file",
            f"upload_file of each volume, {CONCURRENCY} x {PART_SIZE // MiB} MiB parts",
            stored,
            cap=rate,
        )
        ours_up = suite.add_case(
            CAPPED_BACKUP,
            "btrsendd backup",
            f"btrsendd backup --date {FULL_DAY} (S3, no compression, no encryption, defaults)",
            stored,
            baseline=plain_up.name,
            cap=rate,
        )
        suite.alternate(
            [
                _plain_upload(suite, server, endpoint, plain_up, reference),
                _capped_backup(suite, server, endpoint, ours_up),
            ]
        )
        plain_down = suite.add_case(
            CAPPED_RESTORE,
            "plain boto3 download_file",
            f"download_file of each volume, {CONCURRENCY} x {PART_SIZE // MiB} MiB ranges",
            stored,
            cap=rate,
        )
        ours_down = suite.add_case(
            CAPPED_RESTORE,
            "btrsendd restore",
            f"btrsendd restore --date {FULL_DAY} --target DIR --yes",
            stored,
            baseline=plain_down.name,
            cap=rate,
        )
        suite.alternate(
            [
                _plain_download(suite, endpoint, plain_down, reference),
                suite.restore_step(ours_down, _capped_restore(suite, ours_down, reference)),
            ]
        )
    _empty_bucket(server, reference.bucket)


def _store_reference(suite: Suite, server: S3Server) -> _Reference:
    bucket = server.new_bucket()
    home = suite.world.fresh_dir("btrsendd-s3-reference")
    config = _s3_config(suite.world, home, bucket, server.endpoint_url)
    argv = suite.btrsendd(config, "backup", "--date", FULL_DAY.isoformat())
    measure.run(argv, log=suite.world.work / "logs" / "s3-reference.log")
    client = server.client()
    objects = [
        obj
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if obj["Key"].rsplit("/", 1)[-1].startswith("vol-")
    ]
    keys = sorted(obj["Key"] for obj in objects)
    copies = suite.world.fresh_dir("s3-objects")
    files = [copies / key.rsplit("/", 1)[-1] for key in keys]
    for key, path in zip(keys, files, strict=True):
        client.download_file(bucket, key, str(path))
    stored = sum(obj["Size"] for obj in objects)
    suite.say(f"  reference backup: {len(keys)} volumes, {stored / MiB:.0f} MiB")
    return _Reference(bucket, config, keys, files, stored)


def _plain(endpoint: str, direction: str, bucket: str, *items: str) -> list[str]:
    argv = [sys.executable, "-m", "bench.plain_s3", direction, endpoint, bucket]
    return [*argv, str(CONCURRENCY), str(PART_SIZE), *items]


def _plain_upload(
    suite: Suite, server: S3Server, endpoint: str, case: Case, reference: _Reference
) -> Step:
    def step() -> None:
        bucket = server.new_bucket()
        files = [str(path) for path in reference.files]
        argv = _plain(endpoint, "upload", bucket, *files)
        suite.record(case, measure.run(argv, log=suite.log_path(case), watch_rss=True))
        _empty_bucket(server, bucket)

    return step


def _capped_backup(suite: Suite, server: S3Server, endpoint: str, case: Case) -> Step:
    def step() -> None:
        bucket = server.new_bucket()
        home = suite.world.fresh_dir("btrsendd-s3-capped")
        config = _s3_config(suite.world, home, bucket, endpoint)
        argv = suite.btrsendd(config, "backup", "--date", FULL_DAY.isoformat())
        suite.record(case, measure.run(argv, log=suite.log_path(case), watch_rss=True))
        _empty_bucket(server, bucket)

    return step


def _plain_download(suite: Suite, endpoint: str, case: Case, reference: _Reference) -> Step:
    def step() -> None:
        target = suite.world.fresh_dir("s3-downloads")
        argv = _plain(endpoint, "download", reference.bucket, str(target), *reference.keys)
        suite.record(case, measure.run(argv, log=suite.log_path(case), watch_rss=True))

    return step


def _capped_restore(
    suite: Suite, case: Case, reference: _Reference
) -> Callable[[Path], measure.Sample]:
    def restore(target: Path) -> measure.Sample:
        argv = suite.btrsendd(reference.config, "restore", "--source", SOURCE)
        argv += ["--date", FULL_DAY.isoformat(), "--target", str(target), "--yes"]
        return measure.run(argv, log=suite.log_path(case), watch_rss=True)

    return restore

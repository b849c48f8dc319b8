"""The plain concurrent client btrsendd's S3 transfers are measured against.

boto3's managed transfer (``upload_file`` / ``download_file``, the classic threaded transfer
manager) with the same concurrency and part size as btrsendd's ``pipeline`` settings: what a
script would do to move the same objects, one object after another, each in concurrent parts
(uploads) or concurrent byte ranges (downloads).  It runs as its own process so that the
benchmark measures its time, CPU and peak RSS exactly as it measures btrsendd's.

``python -m bench.plain_s3 upload ENDPOINT BUCKET CONCURRENCY PART_SIZE FILE...`` stores each
file under its name; ``download ENDPOINT BUCKET CONCURRENCY PART_SIZE DIR KEY...`` fetches
each key into ``DIR`` (then deletes the file: only the transfer counts, not what it filled).
Credentials come from the environment, as for btrsendd.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from bench.dataset import parse_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_s3")
    parser.add_argument("direction", choices=("upload", "download"))
    parser.add_argument("endpoint")
    parser.add_argument("bucket")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("part_size", type=parse_size)
    parser.add_argument("items", nargs="+", help="files to upload, or DIR then keys to download")
    args = parser.parse_args(argv)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=args.endpoint,
        # One connection per transfer thread, as btrsendd keeps one per part in flight.
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=args.concurrency),
    )
    transfer = TransferConfig(
        multipart_threshold=args.part_size,
        multipart_chunksize=args.part_size,
        max_concurrency=args.concurrency,
        use_threads=True,
        preferred_transfer_client="classic",
    )
    if args.direction == "upload":
        for name in args.items:
            path = Path(name)
            client.upload_file(str(path), args.bucket, path.name, Config=transfer)
    else:
        target, *keys = args.items
        for key in keys:
            path = Path(target) / Path(key).name
            client.download_file(args.bucket, key, str(path), Config=transfer)
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench``: build the world, run every group, print the tables, save the JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import report, s3suite, world
from bench.dataset import GiB, MiB, parse_size
from bench.suite import Suite

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="btrsendd against the bare shell pipeline: throughput, CPU and memory.",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=GiB,
        help="dataset size, e.g. 256MiB for a quick run (default: 1GiB, about 13 minutes in all "
        "on 2 cores; each further GiB adds about 10, most of it gzip)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per case; medians are reported (default: 3)"
    )
    parser.add_argument("--seed", type=int, default=42, help="dataset seed (default: 42)")
    parser.add_argument(
        "--memory-sizes",
        type=lambda text: [parse_size(part) for part in text.split(",")],
        default=[GiB, 8 * GiB],
        metavar="SIZES",
        help="stream sizes for the peak-RSS runs (default: 1GiB,8GiB)",
    )
    parser.add_argument(
        "--upload-size",
        type=parse_size,
        default=parse_size("512MiB"),
        help="stream size per SeaweedFS upload run; 0 skips the upload sweep (default: 512MiB)",
    )
    parser.add_argument(
        "--cap",
        type=parse_size,
        default=16 * MiB,
        help="per-connection rate cap of the S3 proxy, bytes/s (e.g. 16MiB); the full backup is "
        "uploaded to and restored from SeaweedFS through it; 0 skips those runs (default: 16MiB)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the loop images and scratch tmpfs go (default: $TMPDIR or /tmp)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print(
            "python -m bench: needs root (loop mounts, btrfs send/receive, tmpfs)", file=sys.stderr
        )
        return 2
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    with world.build(args.size, args.seed, args.workdir, say) as w:
        full, incremental = w.full_bytes / MiB, w.incremental_bytes / MiB
        say(f"send streams: full {full:.0f} MiB, incremental {incremental:.0f} MiB")
        suite = Suite(w, args.runs, args.seed, say)
        say("backups")
        suite.backups()
        say("stream check and file index")
        suite.stream_checks()
        say("restores")
        suite.restores()
        say("memory")
        suite.memory(args.memory_sizes)
        if args.upload_size or args.cap:
            with s3suite.seaweedfs() as server:
                if args.upload_size:
                    say("uploads to SeaweedFS")
                    s3suite.uploads(suite, server, args.upload_size)
                if args.cap:
                    say(f"S3 behind a cap of {args.cap / MiB:g} MiB/s per connection")
                    s3suite.capped(suite, server, args.cap)
        dataset = w.dataset
    summaries = report.summarize(suite.cases)
    found = report.targets(summaries)
    print(report.table(summaries, found))
    print(f"file index sizes: {report.index_sizes(suite.index_bytes, dataset.files)}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench-{stamp}.json"
    report.write_json(
        path,
        {
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "started": stamp,
            "duration_seconds": round(time.monotonic() - started),
            "machine": report.machine(),
            "parameters": {
                "size": args.size,
                "runs": args.runs,
                "seed": args.seed,
                "memory_sizes": args.memory_sizes,
                "upload_size": args.upload_size,
                "cap": args.cap,
            },
            "dataset": {
                "files": dataset.files,
                "data_bytes": dataset.data_bytes,
                "apparent_bytes": dataset.apparent_bytes,
            },
            "stream_check": [asdict(cost) for cost in report.check_costs(summaries)],
            "file_index": report.index_sizes(suite.index_bytes, dataset.files),
        },
        suite.cases,
        summaries,
        found,
    )
    say(f"done; results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

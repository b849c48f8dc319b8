"""Benchmarks (not tests): btrsendd against the bare shell pipeline, and its memory.

``make bench`` (``python -m bench``) builds a reproducible dataset on a loop-mounted btrfs,
measures full and incremental backups and restores with btrsendd's real command line against
``btrfs send | compressor | gpg`` run by bash, and btrsend's pipeline, alternating runs; then
btrsendd's peak memory for growing streams and upload throughput to a local SeaweedFS.  It
prints the medians and writes every run to ``bench/results/*.json``.  See README
"Performance" for what it measured here and ``python -m bench --help`` for its options.
"""

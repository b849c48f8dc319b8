"""Tests of the pipeline modules: piper, readers, codec, gpg, btrfs, sendstream, snapshots."""

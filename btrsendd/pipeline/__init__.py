"""The streams and the programs they pass through: btrfs send and receive, the compressor and gpg.

``piper`` joins programs by OS pipes and reports the root cause when one fails; ``readers``
reads their output without copies, ending only on success; ``codec`` turns a send stream into
stored volumes and back; ``gpg`` and ``btrfs`` hold every call into those programs;
``sendstream`` and ``expected_stream`` check that a stream is whole and the one planned.
"""

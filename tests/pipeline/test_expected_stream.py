"""What a planned backup's stream must say it is: its kind, its snapshot, its parent.

The check on a real stream, refused at its first command, is in ``test_sendstream.py``.
"""

from __future__ import annotations

import pytest

from btrsendd.model import StreamIdentity
from btrsendd.pipeline.expected_stream import ExpectedStream
from btrsendd.pipeline.sendstream import StreamError


def test_expected_kind_parent_and_snapshot() -> None:
    full = StreamIdentity(1, "2000-01-01", "aa" * 16, 7)
    incremental = StreamIdentity(1, "2000-01-07", "bb" * 16, 9, "aa" * 16, 7)
    other = StreamIdentity(1, "2000-01-01", "cc" * 16, 8)
    ExpectedStream("full", uuid="aa" * 16)(full)
    ExpectedStream("incremental", parent=full)(incremental)
    ExpectedStream("incremental", parent_uuid="aa" * 16)(incremental)
    assert ExpectedStream("incremental", parent=full).link_checkable
    assert not ExpectedStream("incremental").link_checkable
    ExpectedStream("incremental")(incremental)  # a legacy parent that names nothing: unchecked

    def refusal(expected: ExpectedStream, identity: StreamIdentity) -> str:
        with pytest.raises(StreamError) as caught:
            expected(identity)
        return str(caught.value)

    assert refusal(ExpectedStream("full"), incremental) == (
        "a full backup was due, but the send stream is incremental (relative to subvolume "
        "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa); send it without -p"
    )
    label = "the backup of 2000-01-01"
    assert refusal(ExpectedStream("incremental", parent=full, parent_label=label), full) == (
        "an incremental backup relative to the backup of 2000-01-01 was due, but the send "
        "stream is a full one; send it with -p and the backup of 2000-01-01's snapshot"
    )
    assert refusal(
        ExpectedStream("incremental", parent=other, parent_label=label), incremental
    ) == (
        "the send stream is relative to subvolume aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa "
        "(ctransid 7), not to the backup of 2000-01-01, which sent "
        "cccccccc-cccc-cccc-cccc-cccccccccccc (ctransid 8); send it with -p and the backup of "
        "2000-01-01's snapshot"
    )
    moved = StreamIdentity(1, "2000-01-01", "aa" * 16, 8)  # same subvolume, changed since
    assert "(ctransid 7), not to" in refusal(
        ExpectedStream("incremental", parent=moved), incremental
    )
    assert "not to the parent backup's snapshot (cccccccc-" in refusal(
        ExpectedStream("incremental", parent_uuid="cc" * 16), incremental
    )
    assert refusal(ExpectedStream("full", uuid="cc" * 16), full) == (
        "the send stream is of subvolume aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa, not of the "
        "snapshot being backed up (cccccccc-cccc-cccc-cccc-cccccccccccc)"
    )

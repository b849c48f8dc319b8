"""The SHA-256 tree hash Glacier vaults use to check every byte uploaded and downloaded.

AWS's algorithm: split the data into 1 MiB chunks (the last may be shorter), hash each with
SHA-256, then hash adjacent pairs of digests level by level until one remains; a digest left
without a partner at the end of a level moves up unchanged.  Empty data hashes like an empty
chunk: SHA-256 of nothing.

Because a power-of-two number of chunks forms a complete subtree, the tree hashes of
consecutive power-of-two-MiB pieces (multipart parts, ranges of a download) combine with the
same pairwise rule into the tree hash of the whole.  That is what lets uploads hash each part
where it is sent, and downloads check the whole archive from the ranges they fetched, without
a second pass over the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: The leaf size of the tree, fixed by AWS.
CHUNK = 1024 * 1024


def combine(digests: Sequence[bytes]) -> bytes:
    """Reduce digests pairwise, level by level, an unpaired last one moving up unchanged.

    On 1 MiB chunk digests this is the tree hash itself; on the tree hashes of consecutive
    power-of-two-MiB pieces it is the tree hash of their concatenation.  No digests means no
    data, whose tree hash is SHA-256 of nothing.
    """
    level = list(digests)
    if not level:
        return hashlib.sha256().digest()
    while len(level) > 1:
        paired = [
            hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class TreeHasher:
    """Incremental tree hash of a stream: ``update`` with pieces of any size, then ``digest``.

    Memory is one digest per level of the tree (a binary counter of complete subtrees), not
    one per chunk, so hashing a multi-terabyte stream costs a few kilobytes.
    """

    def __init__(self) -> None:
        self._chunk = hashlib.sha256()
        self._filled = 0
        # Complete subtrees, largest first: (number of levels above the leaves, digest).
        self._stack: list[tuple[int, bytes]] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            take = min(len(view), CHUNK - self._filled)
            self._chunk.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == CHUNK:
                self._push_leaf()

    def _push_leaf(self) -> None:
        node = (0, self._chunk.digest())
        self._chunk = hashlib.sha256()
        self._filled = 0
        while self._stack and self._stack[-1][0] == node[0]:
            height, left = self._stack.pop()
            node = (height + 1, hashlib.sha256(left + node[1]).digest())
        self._stack.append(node)

    def digest(self) -> bytes:
        """The tree hash of everything passed to ``update`` so far (the hasher stays usable)."""
        nodes = [digest for _height, digest in self._stack]
        if self._filled or not nodes:  # a partial last chunk, or no data at all
            nodes.append(self._chunk.digest())
        # The unfinished right edge of the tree: its subtrees shrink from left to right, and
        # the pairwise rule joins them from the smallest (rightmost) upwards.
        root = nodes[-1]
        for left in reversed(nodes[:-1]):
            root = hashlib.sha256(left + root).digest()
        return root

    def hexdigest(self) -> str:
        return self.digest().hex()


def tree_hash(data: bytes | bytearray | memoryview) -> bytes:
    """The tree hash of ``data`` held in memory (one part, one range)."""
    hasher = TreeHasher()
    hasher.update(data)
    return hasher.digest()

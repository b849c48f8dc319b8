"""The replay: a chain's file indexes applied, in memory, as ``btrfs receive`` applies streams.

A ``Tree`` is a small virtual file system of inodes (so hard links are several names of one
inode, and a directory renamed takes its subtree along) that each record changes exactly as
``btrfs receive`` would change the subvolume it receives into.  A full backup starts a fresh
tree; an incremental applies on top of its parent's, which must be the backup applied before.

An incremental's clones read the parent snapshot through a mark (``inodes.py``) taken as the
stream starts: ``btrfs receive`` clones from the parent subvolume, which the stream does not
change, while the tree replays the stream in place.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from typing import Any

from btrsendd.fileindex import pieces as p
from btrsendd.fileindex import records as r
from btrsendd.fileindex.entries import Entry, Kind, Piece
from btrsendd.fileindex.inodes import CREATED_MODE, Inode, Mark, Namespace, Refused, walk
from btrsendd.fileindex.records import FileIndexError, Index

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_MKNOD_KINDS: dict[int, Kind] = {
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}


class Tree(Namespace):
    """The subvolume a chain of backups makes, one backup at a time (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.header: r.Header | None = None
        self._backup = ""
        self._parent: Mark | None = None
        self._applying: r.Header | None = None
        self._handlers: dict[type[r.Record], Callable[[Any], object]] = {
            r.Mkfile: lambda rec: self._create(rec.path, "file", CREATED_MODE["file"]),
            r.Mkdir: lambda rec: self._create(rec.path, "dir", CREATED_MODE["dir"]),
            r.Mknod: self._mknod,
            r.Symlink: self._symlink,
            r.Rename: self._rename,
            r.Link: self._link,
            r.Unlink: self._unlink,
            r.Rmdir: self._rmdir,
            r.SetXattr: self._set_xattr,
            r.RemoveXattr: self._remove_xattr,
            r.Write: self._write,
            r.Clone: self._clone,
            r.EncodedWrite: self._encoded_write,
            r.Truncate: self._truncate,
            r.Fallocate: self._fallocate,
            r.Chmod: self._chmod,
            r.Chown: self._chown,
            r.Utimes: self._utimes,
            r.Fileattr: self._fileattr,
            r.UpdateExtent: self._update_extent,
            r.EnableVerity: lambda rec: self._file(rec.path),
        }

    # -- the API ---------------------------------------------------------------------------

    def apply(self, backup_id: str, index: Index) -> None:
        """Replay one backup's records on top of the tree (a full backup starts afresh).

        ``FileIndexError`` if the backup does not follow the one applied before (an
        incremental's parent must be it) or a record cannot apply; the tree is then unusable
        until a full backup is applied.
        """
        header = index.header
        if header.parent_uuid is None:
            self._reset()
        elif self.header is None:
            raise FileIndexError(
                f"backup {backup_id} is an incremental, but its parent's file index was not "
                "replayed before it"
            )
        elif header.parent_uuid != self.header.uuid:
            raise FileIndexError(
                f"backup {backup_id} was sent relative to subvolume {header.parent_uuid}, not "
                f"to the backup replayed before it ({self.header.uuid}): the chain does not fit"
            )
        self.header = None  # unusable until this backup has applied whole
        self._backup = backup_id
        self._applying = header
        self._parent = self.mark() if header.parent_uuid is not None else None
        handlers = self._handlers
        try:
            for number, record in enumerate(index.records, 1):
                try:
                    handlers[type(record)](record)
                except Refused as exc:
                    raise FileIndexError(
                        f"file index of {backup_id}, record {number} ({_name(record)} "
                        f"{record.path!r}): {exc}"
                    ) from None
        finally:
            if self._parent is not None:
                self._parent.release()
                self._parent = None
        self.header = header

    def entry(self, path: str) -> Entry | None:
        """The entry at ``path`` ("" is the root; '/'-separated, no leading '/'), or None."""
        try:
            node = self._find(path)
        except Refused:
            return None
        return None if node is None else node.entry(path)

    def entries(self, under: str = "") -> Iterator[Entry]:
        """``under`` and everything beneath it, parents before children, names sorted."""
        try:
            node = self._find(under)
        except Refused:
            node = None
        return walk(node, under, lambda inode: inode)

    # -- the records ----------------------------------------------------------------------

    def _create(self, path: str, kind: Kind, mode: int) -> Inode:
        inode = self._new(kind, mode)
        self._insert(path, inode)
        return inode

    def _mknod(self, rec: r.Mknod) -> None:
        kind = _MKNOD_KINDS.get(stat.S_IFMT(_mode(rec.mode)))
        if kind is None:
            raise Refused(f"mode {rec.mode:o} is not a fifo, socket or device")
        self._create(rec.path, kind, stat.S_IFMT(rec.mode)).rdev = rec.rdev

    def _symlink(self, rec: r.Symlink) -> None:
        inode = self._create(rec.path, "symlink", stat.S_IFLNK | 0o777)
        inode.target = rec.target
        inode.size = len(rec.target.encode("utf-8", "surrogateescape"))

    def _rename(self, rec: r.Rename) -> None:
        inode, parent, name = self._detach(rec.path)
        if rec.to == rec.path:
            return
        if inode.kind == "dir" and rec.to.startswith(rec.path + "/"):
            raise Refused(f"cannot move a directory into itself ({rec.to!r})")
        to_parent, to_name = self._slot(rec.to)
        assert to_parent.children is not None and parent.children is not None
        there = to_parent.children.get(to_name)
        if there is inode:
            return  # two names of one inode: rename(2) does nothing
        if there is not None:
            if (inode.kind == "dir") != (there.kind == "dir"):
                raise Refused(f"{rec.to!r} is a {there.kind}; rename cannot replace it")
            if there.children:
                raise Refused(f"{rec.to!r} is a directory that is not empty")
        self._touch(parent)
        self._touch(to_parent)
        del parent.children[name]
        to_parent.children[to_name] = inode
        if there is not None:
            there.nlink -= 1

    def _link(self, rec: r.Link) -> None:
        inode = self._at(rec.target)
        if inode.kind == "dir":
            raise Refused(f"{rec.target!r} is a directory, which cannot be hard linked")
        self._insert(rec.path, inode)

    def _unlink(self, rec: r.Unlink) -> None:
        inode, parent, name = self._detach(rec.path)
        if inode.kind == "dir":
            raise Refused("a directory (unlink removes files)")
        assert parent.children is not None
        self._touch(parent)
        del parent.children[name]
        inode.nlink -= 1

    def _rmdir(self, rec: r.Rmdir) -> None:
        inode, parent, name = self._detach(rec.path)
        if inode.children is None:
            raise Refused(f"a {inode.kind}, not a directory")
        if inode.children:
            raise Refused("the directory is not empty")
        assert parent.children is not None
        self._touch(parent)
        del parent.children[name]
        inode.nlink -= 1

    def _set_xattr(self, rec: r.SetXattr) -> None:
        inode = self._at(rec.path)
        self._touch(inode)
        if inode.xattrs is None:
            inode.xattrs = {}
        inode.xattrs[rec.name] = rec.value

    def _remove_xattr(self, rec: r.RemoveXattr) -> None:
        inode = self._at(rec.path)
        if not inode.xattrs or rec.name not in inode.xattrs:
            raise Refused(f"it has no xattr {rec.name!r}")
        self._touch(inode)
        del inode.xattrs[rec.name]

    def _put(self, inode: Inode, start: int, length: int, new: list[Piece]) -> None:
        """Make ``[start, start + length)`` hold ``new``, growing the file to its end."""
        assert inode.pieces is not None
        self._touch(inode)
        p.replace(inode.pieces, start, start + length, new)
        inode.size = max(inode.size, start + length)

    def _write(self, rec: r.Write) -> None:
        piece = Piece(rec.offset, rec.length, self._backup, rec.stream_offset)
        self._put(self._file(rec.path), rec.offset, rec.length, [piece] if rec.length else [])

    def _encoded_write(self, rec: r.EncodedWrite) -> None:
        piece = Piece(rec.offset, rec.unencoded_file_length, self._backup, rec.stream_offset,
                      "sent compressed (btrfs send --compressed-data), which restore --path "
                      "cannot decode")  # fmt: skip
        self._put(self._file(rec.path), rec.offset, rec.unencoded_file_length, [piece])

    def _update_extent(self, rec: r.UpdateExtent) -> None:
        piece = Piece(rec.offset, rec.length, self._backup, 0,
                      "not in the stream (btrfs send --no-data)")  # fmt: skip
        self._put(self._file(rec.path), rec.offset, rec.length, [piece] if rec.length else [])

    def _clone(self, rec: r.Clone) -> None:
        header = self._header_applying()
        if rec.source_uuid == header.uuid:
            source = self._find(rec.source_path)
        elif self._parent is not None and rec.source_uuid == header.parent_uuid:
            source = self._parent.lookup(rec.source_path)
        else:
            raise Refused(
                f"clones from subvolume {rec.source_uuid}, which is neither this backup's nor "
                "its parent's"
            )
        if source is None or source.pieces is None:
            raise Refused(f"the clone's source {rec.source_path!r} is not a regular file")
        if rec.source_offset >= source.size and rec.length:
            raise Refused(f"the clone's source range starts past the end of {rec.source_path!r}")
        # As the kernel does: a length of 0 means to the source's end, and none goes past it.
        length = min(rec.length or source.size, source.size - rec.source_offset)
        start = rec.source_offset
        moved = p.copy(source.pieces, start, start + length, rec.offset)
        self._put(self._file(rec.path), rec.offset, length, moved)

    def _header_applying(self) -> r.Header:
        header = self._applying
        assert header is not None
        return header

    def _truncate(self, rec: r.Truncate) -> None:
        inode = self._file(rec.path)
        assert inode.pieces is not None
        self._touch(inode)
        p.cut(inode.pieces, rec.size)
        inode.size = rec.size

    def _fallocate(self, rec: r.Fallocate) -> None:
        inode = self._file(rec.path)
        assert inode.pieces is not None
        start, end = rec.offset, rec.offset + rec.length
        mode = rec.mode
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            raise Refused(f"fallocate mode {mode:#x} is not one btrfs supports")
        self._touch(inode)
        if not mode & FALLOC_FL_KEEP_SIZE and not mode & FALLOC_FL_PUNCH_HOLE:
            inode.size = max(inode.size, end)
        end = min(end, inode.size)  # allocated past the end reads as nothing
        if mode & FALLOC_FL_PUNCH_HOLE:
            p.replace(inode.pieces, start, end, [])
        elif mode & FALLOC_FL_ZERO_RANGE:
            p.replace(
                inode.pieces, start, end, [Piece(start, end - start, None)] if end > start else []
            )
        else:
            p.allocate(inode.pieces, start, end)

    def _chmod(self, rec: r.Chmod) -> None:
        inode = self._at(rec.path)
        if inode.kind == "symlink":
            return  # chmod(2) would follow it; btrfs send never sends one
        self._touch(inode)
        inode.mode = stat.S_IFMT(inode.mode) | stat.S_IMODE(_mode(rec.mode))

    def _chown(self, rec: r.Chown) -> None:
        inode = self._at(rec.path)
        self._touch(inode)
        inode.uid, inode.gid = rec.uid, rec.gid

    def _utimes(self, rec: r.Utimes) -> None:
        inode = self._at(rec.path)
        self._touch(inode)
        inode.atime, inode.mtime = rec.atime_ns, rec.mtime_ns

    def _fileattr(self, rec: r.Fileattr) -> None:
        inode = self._at(rec.path)
        self._touch(inode)
        inode.fileattr = rec.attr


def _mode(mode: int) -> int:
    """``mode`` if it is one an inode can have (the stream's attribute is a u64, but ``stat``'s
    functions take a ``mode_t`` and overflow on more)."""
    if mode > 0o177777:
        raise Refused(f"mode {mode:o} is not a file mode")
    return mode


def _name(record: r.Record) -> str:
    """The record's command as ``btrfs receive --dump`` names it: ``SetXattr``, set_xattr."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(record).__name__).lower()

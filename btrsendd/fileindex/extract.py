"""Recreating a backed-up day's entries in a directory on any file system (``restore --path``).

``btrfs receive`` needs btrfs; this needs only POSIX calls, so a day (or a few of its paths)
comes back onto ext4, xfs or tmpfs.  The entries (``entries.Entry``, from replaying the
chain's file indexes) say what each path was; their contents arrive later, piece by piece,
as the volumes holding them are decoded (``fetch.py``), and are written where they belong
with ``pwrite``: ranges no piece covers stay holes, and so do whole blocks of zeros (an
incremental stream sends a punched hole as zeros), as ``cp --sparse=always`` does.

Names come from storage, so none is trusted as a path: every component is checked (no
``..``, ``.``, empty or NUL), and everything is created relative to directory descriptors
opened with ``O_NOFOLLOW``, so a restored symlink can never redirect a later write.

The order matters: owners are set after contents (a write as root keeps set-id bits, but
``chown`` clears them), xattrs after owners (``chown`` clears ``security.capability``),
modes after both, and times last, directories deepest first (creating an entry changes its
directory's mtime).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from btrsendd.errors import OperationalError
from btrsendd.fileindex.entries import Entry
from btrsendd.fileindex.records import FileIndexError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
#: The block size whose all-zero blocks are left as holes: the page size every Linux file
#: system allocates in (btrfs's sector size on x86-64, ext4's and tmpfs's default block).
BLOCK = 4096
_ZEROS = memoryview(bytes(BLOCK))
#: How a file system says it will not hold an xattr: a namespace it lacks or keeps for
#: others (``trusted.*`` needs root, tmpfs before Linux 6.6 has no ``user.*``), or no room
#: (ext4 keeps an inode's xattrs in one block).
_XATTR_REFUSALS = (errno.EPERM, errno.EOPNOTSUPP, errno.EACCES, errno.ENOSPC, errno.E2BIG)
#: Descriptors kept open at once (directories and files each): the stream visits a file's
#: pieces together, so a few suffice, and a day of a million files must not exhaust them.
_OPEN_MAX = 64

#: What ``mknod`` makes for each kind that is neither file, directory nor symlink.
_NODES = {
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
}


def components(path: str) -> tuple[str, ...]:
    """The components of an entry's ``path`` ("" is the root: none), each one plain.

    A ``FileIndexError`` for anything that could leave the directory restored into or name
    something other than what it says.
    """
    if path == "":
        return ()
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise FileIndexError(
                f"the file index names the path {path!r}, which is not a plain relative path; "
                "the index is damaged or forged"
            )
    return parts


#: The largest file offset and size (``off_t``), user or group id (``uid_t``), time in
#: seconds (``time_t``), xattr name (``XATTR_NAME_MAX``) and file name (``NAME_MAX``) the
#: system calls take.
_OFF_MAX = 2**63 - 1
_ID_MAX = 2**32 - 1
_SECONDS = range(-(2**63), 2**63)
_XATTR_NAME_MAX = 255
_NAME_MAX = 255


def check_entries(entries: Iterable[Entry]) -> None:
    """Refuse, before anything is spent, entries no system call could recreate.

    Every number in an index is a u64 and every xattr name any bytes: an index that is
    damaged or forged can say what no file system holds (a file of 2**64 bytes, a NUL in
    a name), which would otherwise surface only at the end of a thaw, as a crash.
    """
    for entry in entries:
        components(entry.path)
        problem = _problem(entry)
        if problem is not None:
            raise FileIndexError(
                f"the file index gives {entry.path!r} {problem}, which no file system "
                "holds; the index is damaged or forged"
            )


def _problem(entry: Entry) -> str | None:
    longest = max((len(os.fsencode(name)) for name in entry.path.split("/")), default=0)
    if longest > _NAME_MAX:
        return f"a name of {longest} bytes"
    if entry.size > _OFF_MAX or any(p.offset + p.length > _OFF_MAX for p in entry.pieces):
        return f"a size of {entry.size} bytes"
    if entry.uid > _ID_MAX or entry.gid > _ID_MAX:
        return f"the owner {entry.uid}:{entry.gid}"
    if any(t // 1_000_000_000 not in _SECONDS for t in (entry.atime_ns, entry.mtime_ns)):
        return f"the times {entry.atime_ns}, {entry.mtime_ns} ns"
    for name, _ in entry.xattrs:
        if not name or b"\0" in name or len(name) > _XATTR_NAME_MAX:
            return f"an xattr named {name[:64]!r}"
    if entry.kind == "symlink" and not entry.target:
        return "a symlink with no target"
    return None


@dataclass
class Refused:
    """What the target file system would not hold: told as warnings, not failures."""

    #: xattr name -> how many entries it was refused on, and why.
    xattrs: dict[str, tuple[int, str]] = field(default_factory=dict)
    owners: int = 0
    #: Device nodes not made: only root may.
    devices: int = 0
    #: Entries with btrfs inode flags (``chattr``), which are not carried over.
    fileattrs: int = 0

    def xattr(self, name: bytes, exc: OSError) -> None:
        key = os.fsdecode(name)
        count, _ = self.xattrs.get(key, (0, ""))
        self.xattrs[key] = (count + 1, exc.strerror or str(exc))

    def lines(self) -> list[str]:
        """One line per kind of refusal, worded for the user."""
        lines = [
            f"the target file system refused xattr {name} on {count} entr"
            f"{'y' if count == 1 else 'ies'} ({why})"
            for name, (count, why) in sorted(self.xattrs.items())
        ]
        if self.owners:
            lines.append(f"owners not restored on {self.owners} entries: changing them needs root")
        if self.devices:
            lines.append(f"{self.devices} device node(s) not created: making them needs root")
        if self.fileattrs:
            lines.append(
                f"btrfs inode flags (chattr) not restored on {self.fileattrs} entries: only "
                "btrfs holds them"
            )
        return lines


class _Descriptors:
    """Open descriptors by path, the least recently used closed beyond ``_OPEN_MAX``."""

    def __init__(self) -> None:
        self._open: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> int | None:
        fd = self._open.get(key)
        if fd is not None:
            self._open.move_to_end(key)
        return fd

    def put(self, key: tuple[str, ...], fd: int) -> int:
        self._open[key] = fd
        if len(self._open) > _OPEN_MAX:
            os.close(self._open.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])


class Extractor:
    """Recreates entries inside ``root`` (an open, empty directory this restore made).

    ``create`` makes every entry (files empty but of their size), ``write`` puts contents
    in, ``finish`` sets owners, xattrs, modes and times.  ``root`` itself takes the
    attributes of the entry whose path is "".
    """

    def __init__(self, root: int) -> None:
        self._root = root
        self._dirs = _Descriptors()
        self._files = _Descriptors()
        self._entries: dict[tuple[str, ...], Entry] = {}
        #: The first name of each inode (hard links), which the others link to.
        self._inodes: dict[int, tuple[str, ...]] = {}
        self.refused = Refused()

    def close(self) -> None:
        self._dirs.close()
        self._files.close()

    # -- structure ---------------------------------------------------------------------

    def create(self, entries: Iterable[Entry]) -> None:
        """Make each entry, parents before children (as ``Tree.entries`` yields them)."""
        for entry in entries:
            parts = components(entry.path)
            if parts in self._entries:
                continue  # asked for twice (a path and one below it)
            self._entries[parts] = entry
            if not parts:
                continue
            try:
                self._make(entry, parts)
            except PermissionError:
                if entry.kind not in ("chardev", "blockdev"):
                    raise OperationalError(
                        f"cannot create {entry.path!r} in the restore: permission denied"
                    ) from None
                self.refused.devices += 1
                del self._entries[parts]
            except OSError as exc:
                raise OperationalError(
                    f"cannot create {entry.path!r} in the restore: {exc.strerror}"
                ) from None

    def _make(self, entry: Entry, parts: tuple[str, ...]) -> None:
        parent, name = self._dir(parts[:-1]), parts[-1]
        if entry.kind != "dir":
            first = self._inodes.setdefault(entry.inode, parts)
            if first != parts:
                os.link(
                    first[-1],
                    name,
                    src_dir_fd=self._dir(first[:-1]),
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
                return
        if entry.kind == "dir":
            os.mkdir(name, 0o700, dir_fd=parent)
        elif entry.kind == "file":
            fd = os.open(name, _FILE | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent)
            try:
                os.ftruncate(fd, entry.size)
                for piece in entry.pieces:
                    if piece.backup_id is None and piece.length:
                        _allocate(fd, piece.offset, min(piece.length, entry.size - piece.offset))
            finally:
                os.close(fd)
        elif entry.kind == "symlink":
            if entry.target is None:
                raise FileIndexError(f"the file index gives symlink {entry.path!r} no target")
            os.symlink(entry.target, name, dir_fd=parent)
        else:
            os.mknod(name, _NODES[entry.kind] | 0o600, entry.rdev, dir_fd=parent)

    def _dir(self, parts: tuple[str, ...]) -> int:
        """The directory at ``parts``, opened without following a symlink anywhere: from
        its nearest ancestor still open, down.  A loop, not recursion: a path of 4,095
        bytes can be 2,048 levels deep, past Python's recursion limit."""
        opened, fd = len(parts), None
        while opened and (fd := self._dirs.get(parts[:opened])) is None:
            opened -= 1
        if fd is None:
            fd = self._root
        for depth in range(opened + 1, len(parts) + 1):
            fd = self._dirs.put(parts[:depth], os.open(parts[depth - 1], _DIR, dir_fd=fd))
        return fd

    # -- contents ----------------------------------------------------------------------

    def write(self, path: str, offset: int, data: memoryview) -> None:
        """``data`` belongs at ``offset`` of the file at ``path``: written, except whole
        blocks of zeros (left as holes) and anything past the file's size."""
        parts = components(path)
        entry = self._entries.get(parts)
        if entry is None or entry.kind != "file":
            raise FileIndexError(f"the restore was given data for {path!r}, not a file it made")
        data = data[: max(0, entry.size - offset)]
        if not data:
            return
        fd = self._files.get(parts)
        if fd is None:
            opened = os.open(parts[-1], _FILE, dir_fd=self._dir(parts[:-1]))
            fd = self._files.put(parts, opened)
        try:
            for start, end in _nonzero_runs(offset, data):
                _pwrite_all(fd, data[start:end], offset + start)
        except OSError as exc:
            raise OperationalError(
                f"cannot write {path!r} in the restore: {exc.strerror}"
            ) from None

    # -- attributes --------------------------------------------------------------------

    def finish(self) -> None:
        """Owners, xattrs, modes, then times: everything but contents, in the order that
        keeps each (see the module's docstring)."""
        self._files.close()
        # Deepest first: a directory whose mode forbids writing is changed after what is
        # in it, and no later step touches a directory whose times are set.
        ordered = sorted(self._entries.items(), key=lambda item: -len(item[0]))
        for step in (self._attributes, self._times):
            for parts, entry in ordered:
                try:
                    step(parts, entry)
                except OSError as exc:
                    raise OperationalError(
                        f"cannot set the attributes of {entry.path!r} in the restore: "
                        f"{exc.strerror}"
                    ) from None

    def _times(self, parts: tuple[str, ...], entry: Entry) -> None:
        times = (entry.atime_ns, entry.mtime_ns)
        if parts:
            os.utime(parts[-1], ns=times, dir_fd=self._dir(parts[:-1]), follow_symlinks=False)
        else:
            os.utime(self._root, ns=times)

    def _attributes(self, parts: tuple[str, ...], entry: Entry) -> None:
        if parts and self._inodes.get(entry.inode, parts) != parts:
            return  # another name of an inode already done
        parent = self._dir(parts[:-1]) if parts else self._root
        name = parts[-1] if parts else "."
        try:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        except PermissionError:
            self.refused.owners += 1
        # setxattr has no *at form; the descriptor's /proc link names the directory, and
        # the last component is not followed.
        where = f"/proc/self/fd/{parent}/{name}"
        for key, value in entry.xattrs:
            try:
                os.setxattr(where, key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _XATTR_REFUSALS:
                    raise
                self.refused.xattr(key, exc)
        if entry.fileattr:
            self.refused.fileattrs += 1
        if entry.kind != "symlink":  # a symlink's mode means nothing on Linux
            os.chmod(name, stat.S_IMODE(entry.mode), dir_fd=parent)


def _allocate(fd: int, offset: int, length: int) -> None:
    """Allocate a range of zeros (fallocate), where the file system can; a hole otherwise,
    which reads the same."""
    if length <= 0:
        return
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def _nonzero_runs(offset: int, data: memoryview) -> Sequence[tuple[int, int]]:
    """The ranges of ``data`` (at file ``offset``) to write: all but its blocks (whole, or
    the parts at its ends) that hold only zeros.

    What is not written reads as zeros: the file was made by ``ftruncate`` and no byte of
    it is written twice (a file's pieces do not overlap).  Skipping zeros in the parts of a
    block too matters: the codec's chunks and the volumes do not end at block boundaries,
    so a punched hole sent as zeros arrives in parts.
    """
    runs: list[tuple[int, int]] = []
    start = 0
    edge = min(len(data), (-offset) % BLOCK or BLOCK)
    while start < len(data):
        if data[start:edge] != _ZEROS[: edge - start]:
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], edge)
            else:
                runs.append((start, edge))
        start, edge = edge, min(len(data), edge + BLOCK)
    return runs


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written

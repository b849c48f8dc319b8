"""The replay of hand-made records: each command's effect, clones from the parent as it was,
the day-to-day diff, and hostile records refused with one line."""

from __future__ import annotations

import stat

import pytest

from btrsendd.fileindex import records as r
from btrsendd.fileindex.diff import changes
from btrsendd.fileindex.entries import Piece
from btrsendd.fileindex.records import FileIndexError, Header, Index
from btrsendd.fileindex.tree import Tree

FULL = Header(1, "day0", "u0", None)


def index(header: Header, *records: r.Record) -> Index:
    return Index(header, records, 0)


def inc(n: int) -> Header:
    return Header(1, f"day{n}", f"u{n}", f"u{n - 1}")


def file_tree(*records: r.Record) -> Tree:
    tree = Tree()
    tree.apply("b0", index(FULL, *records))
    return tree


def pieces(tree: Tree, path: str) -> list[tuple[int, int, str | None, int]]:
    entry = tree.entry(path)
    assert entry is not None
    return [(p.offset, p.length, p.backup_id, p.stream_offset) for p in entry.pieces]


def test_writes_overwrite_and_split_older_pieces() -> None:
    tree = file_tree(
        r.Mkfile("f"),
        r.Write("f", 0, 100, 1000),
        r.Write("f", 100, 100, 2000),
        r.Write("f", 50, 100, 3000),
    )
    assert pieces(tree, "f") == [(0, 50, "b0", 1000), (50, 100, "b0", 3000), (150, 50, "b0", 2050)]
    entry = tree.entry("f")
    assert entry is not None and entry.size == 200 and entry.kind == "file"


def test_truncate_fallocate_and_holes() -> None:
    tree = file_tree(
        r.Mkfile("f"),
        r.Write("f", 0, 100, 1000),
        r.Write("f", 200, 100, 2000),
        r.Truncate("f", 250),
        r.Fallocate("f", 0, 400, 100),  # allocates past the end: grows
        r.Fallocate("f", 3, 50, 100),  # punches within the first write
        r.Fallocate("f", 1, 600, 100),  # keep size: past the end, nothing
    )
    assert pieces(tree, "f") == [
        (0, 50, "b0", 1000),
        (200, 50, "b0", 2000),
        (400, 100, None, 0),
    ]
    entry = tree.entry("f")
    assert entry is not None and entry.size == 500
    tree.apply("b1", index(inc(1), r.Truncate("f", 210), r.Fallocate("f", 0, 0, 300)))
    assert pieces(tree, "f") == [
        (0, 50, "b0", 1000),
        (50, 150, None, 0),
        (200, 10, "b0", 2000),
        (210, 90, None, 0),
    ]


def test_hard_links_and_directory_renames_move_names_not_inodes() -> None:
    tree = file_tree(
        r.Mkdir("o257-7-0"),
        r.Rename("o257-7-0", "d"),
        r.Mkdir("d/sub"),
        r.Mkfile("d/sub/f"),
        r.Write("d/sub/f", 0, 10, 99),
        r.Link("other", "d/sub/f"),
        r.Rename("d", "e"),
        r.Chmod("other", 0o640),
    )
    moved, other = tree.entry("e/sub/f"), tree.entry("other")
    assert tree.entry("d") is None
    assert moved is not None and other is not None and moved.inode == other.inode
    assert stat.S_IMODE(moved.mode) == 0o640 and stat.S_ISREG(moved.mode)
    assert [e.path for e in tree.entries()] == ["", "e", "e/sub", "e/sub/f", "other"]


def test_clone_from_the_parent_reads_it_as_it_was_before_the_stream() -> None:
    tree = file_tree(r.Mkfile("src"), r.Write("src", 0, 8192, 500))
    tree.apply(
        "b1",
        index(
            inc(1),
            r.Write("src", 0, 4096, 700),  # changes the source first
            r.Mkfile("copy"),
            r.Clone("copy", 0, 8192, "src", 0, "u0", 1),  # from the parent: the old bytes
            r.Mkfile("copy2"),
            r.Clone("copy2", 4096, 4096, "src", 0, "u1", 2),  # from this stream: the new ones
        ),
    )
    assert pieces(tree, "copy") == [(0, 8192, "b0", 500)]
    assert pieces(tree, "copy2") == [(4096, 4096, "b1", 700)]
    assert pieces(tree, "src") == [(0, 4096, "b1", 700), (4096, 4096, "b0", 4596)]


def test_a_clone_from_a_renamed_parent_path() -> None:
    tree = file_tree(r.Mkdir("d"), r.Mkfile("d/f"), r.Write("d/f", 0, 10, 5))
    tree.apply(
        "b1",
        index(
            inc(1),
            r.Rename("d", "e"),
            r.Unlink("e/f"),
            r.Mkfile("g"),
            r.Clone("g", 0, 10, "d/f", 0, "u0", 1),
        ),
    )
    assert pieces(tree, "g") == [(0, 10, "b0", 5)]


def test_encoded_and_missing_data_are_marked() -> None:
    tree = file_tree(
        r.Mkfile("f"),
        r.EncodedWrite("f", 0, 8192, 8192, 0, 1, 0, 300, 40),
        r.Mkfile("g"),
        r.UpdateExtent("g", 0, 100),
    )
    f, g = tree.entry("f"), tree.entry("g")
    assert f is not None and g is not None and f.size == 8192 and g.size == 100
    assert f.pieces[0].unrestorable and "compressed" in f.pieces[0].unrestorable
    assert g.pieces[0].unrestorable and "no-data" in g.pieces[0].unrestorable


def test_metadata_records() -> None:
    tree = file_tree(
        r.Mknod("fifo", stat.S_IFIFO, 0),
        r.Mknod("dev", stat.S_IFCHR | 0o600, 259),
        r.Symlink("link", "fifo"),
        r.Chown("link", 5, 6),
        r.Chmod("fifo", 0o644),
        r.Utimes("fifo", -5, 10, 11),
        r.SetXattr("", b"user.root", b"v"),
        r.SetXattr("fifo", b"user.a", b"1"),
        r.SetXattr("fifo", b"user.b", b"2"),
        r.RemoveXattr("fifo", b"user.a"),
        r.Fileattr("fifo", 0x10),
    )
    fifo, dev, link, root = (tree.entry(p) for p in ("fifo", "dev", "link", ""))
    assert fifo is not None and dev is not None and link is not None and root is not None
    assert (fifo.kind, fifo.mode, fifo.atime_ns, fifo.mtime_ns) == ("fifo", 0o10644, -5, 10)
    assert fifo.xattrs == ((b"user.b", b"2"),) and fifo.fileattr == 0x10
    assert (dev.kind, dev.rdev) == ("chardev", 259)
    assert (link.kind, link.target, link.uid, link.gid, link.size) == ("symlink", "fifo", 5, 6, 4)
    assert root.xattrs == ((b"user.root", b"v"),)


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ((r.Rename("nope", "x"),), "no such file"),
        ((r.Mkdir("d"), r.Rename("d", "d/e")), "into itself"),
        ((r.Mkdir("d"), r.Mkfile("d/f"), r.Rmdir("d")), "not empty"),
        ((r.Mkdir("d"), r.Write("d", 0, 1, 1)), "not a regular file"),
        ((r.Mkfile("f"), r.Mkfile("f")), "exists already"),
        ((r.Mkfile("f"), r.Mkfile("f/g")), "not a directory"),
        ((r.Mkfile("../f"),), "component '..'"),
        ((r.Unlink("x/y"),), "not a directory"),
        ((r.Mkdir("d"), r.Unlink("d")), "a directory"),
        ((r.Mkdir("d"), r.Link("l", "d")), "cannot be hard linked"),
        ((r.Rmdir(""),), "root"),
        ((r.Mkfile("f"), r.RemoveXattr("f", b"user.x")), "no xattr"),
        ((r.Mkfile("f"), r.Clone("f", 0, 1, "g", 0, "elsewhere", 1)), "neither"),
        ((r.Mkfile("f"), r.Clone("f", 0, 1, "f", 5, "u0", 1)), "past the end"),
        ((r.Mkfile("f"), r.Fallocate("f", 8, 0, 1)), "not one btrfs supports"),
        ((r.Mknod("n", stat.S_IFREG, 0),), "not a fifo"),
        ((r.Mknod("n", 2**64 - 1, 0),), "is not a file mode"),
        ((r.Mkfile("f"), r.Chmod("f", 2**63)), "is not a file mode"),
    ],
)
def test_hostile_records_are_refused_with_one_line(
    records: tuple[r.Record, ...], problem: str
) -> None:
    with pytest.raises(FileIndexError) as caught:
        file_tree(*records)
    message = str(caught.value)
    assert problem in message and "\n" not in message
    assert message.startswith(f"file index of b0, record {len(records)} (")


def test_an_incremental_must_follow_its_parent() -> None:
    tree = Tree()
    with pytest.raises(FileIndexError, match="was not replayed"):
        tree.apply("b1", index(inc(1)))
    tree.apply("b0", index(FULL))
    with pytest.raises(FileIndexError, match=r"relative to subvolume u1.*does not fit"):
        tree.apply("b2", index(inc(2)))
    tree.apply("b1", index(inc(1), r.Mkfile("f")))
    tree.apply("b0", index(FULL))  # a full starts afresh
    assert [e.path for e in tree.entries()] == [""]


def test_diff_tells_renames_from_deletes_and_adds() -> None:
    tree = file_tree(
        r.Mkdir("d"),
        r.Mkfile("d/a"),
        r.Write("d/a", 0, 10, 1),
        r.Mkfile("b"),
        r.Mkfile("c"),
        r.Link("c2", "c"),
        r.Mkdir("e"),
        r.Mkfile("e/keep"),
    )
    mark = tree.mark()
    tree.apply(
        "b1",
        index(
            inc(1),
            r.Rename("d", "d2"),  # a directory: one rename, d/a is not listed
            r.Write("b", 0, 5, 9),  # changed
            r.Unlink("c2"),  # one name of two goes
            r.Mkfile("new"),
            r.Mkdir("e/sub"),
            r.Utimes("e", 1, 1, 1),  # a directory's times alone: not listed
        ),
    )
    found = changes(tree, mark)
    assert [(a.path, b.path) for a, b in found.renamed] == [("d", "d2")]
    assert [(a.path, b.path) for a, b in found.changed] == [("b", "b")]
    assert [e.path for e in found.deleted] == ["c2"]
    assert [e.path for e in found.added] == ["e/sub", "new"]
    assert mark.lookup("d/a") is not None and mark.lookup("d2") is None


def test_a_mark_keeps_the_old_state_readable() -> None:
    tree = file_tree(r.Mkfile("f"), r.Write("f", 0, 10, 1), r.SetXattr("f", b"user.x", b"1"))
    mark = tree.mark()
    tree.apply("b1", index(inc(1), r.Write("f", 0, 10, 2), r.SetXattr("f", b"user.x", b"2")))
    (old,) = [e for e in mark.entries() if e.path == "f"]
    assert old.pieces == (Piece(0, 10, "b0", 1),) and old.xattrs == ((b"user.x", b"1"),)
    mark.release()
    tree.apply("b2", index(inc(2), r.Write("f", 0, 10, 3)))
    assert pieces(tree, "f") == [(0, 10, "b2", 3)]


def test_diff_lists_every_name_of_a_changed_hard_linked_file() -> None:
    tree = file_tree(r.Mkdir("d"), r.Mkdir("e"), r.Mkfile("d/f"), r.Link("e/g", "d/f"))
    mark = tree.mark()
    tree.apply("b1", index(inc(1), r.Write("d/f", 0, 5, 9)))  # nothing says e changed
    found = changes(tree, mark)
    assert [(a.path, b.path) for a, b in found.changed] == [("d/f", "d/f"), ("e/g", "e/g")]
    assert not found.added and not found.deleted and not found.renamed

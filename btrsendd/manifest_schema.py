"""The manifest's schema: what a manifest read from storage must be, field by field.

A manifest is read from a bucket that others may be able to write to, so reading one trusts
nothing: every field has an exact JSON type, every name is one safe path component of its
kind (``names.check_name``), sizes are bounded and add up, chain links are consistent, and
the date is not in the future.  Whatever is wrong raises ``strictjson.Invalid`` naming the
field; ``manifest.py`` turns it into its one error.  Keys the reader does not know are ignored
(fields have been added within version 1 before; a reader that refused them would refuse a
newer writer's manifests).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any, get_args

from btrsendd.config import StorageClass
from btrsendd.layout import index_name, volume_name
from btrsendd.model import Backup, FileIndexRef, Kind, StreamIdentity, Volume
from btrsendd.names import NameKind, UnsafeName, check_name, is_safe_component
from btrsendd.pipeline.codec import Codec, Compression
from btrsendd.pricing import LOCAL_CLASS, THAW
from btrsendd.strictjson import (
    Check,
    Invalid,
    Object,
    a_list,
    a_string,
    choice,
    clip,
    day,
    expect,
    integer,
    printable,
    show,
    text,
    timestamp,
)

FORMAT = "btrsendd-manifest"
VERSION = 1
#: Every size and offset: 8 PiB, beyond any send stream, exact in any JSON reader (a double
#: holds it), and an INTEGER sqlite stores.
MAX_BYTES = 2**53
#: A ctransid is a u64 on disk, but sqlite's INTEGER is signed 64-bit.
MAX_CTRANSID = 2**63 - 1
#: The send-stream versions btrfs-progs writes (3 adds fs-verity).
STREAM_VERSIONS = range(1, 4)
#: The classes btrsendd records: the S3 classes the configuration offers, the vault's (a
#: class that needs a thaw but is not configurable), and the local backend's.
STORAGE_CLASSES = frozenset(get_args(StorageClass)) | THAW.keys() | {LOCAL_CLASS}
COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Subvolume UUIDs as ``snapshots`` and the stream reader record them: 32 lowercase hex digits.
_UUID_RE = re.compile(r"[0-9a-f]{32}")
#: A backend's own checksum (``Stored.checksum``), e.g. S3's ``<base64>-<parts>``.
_CHECKSUM_RE = re.compile(r"[!-~]{1,256}")


def _name(kind: NameKind) -> Check[str]:
    def check(field: str, value: object) -> str:
        try:
            return check_name(kind, a_string(field, value))
        except UnsafeName as exc:
            raise Invalid(field, clip(str(exc), 100)) from None

    return check


_BACKUP_ID = _name("backup id")
_UUID = text(_UUID_RE, "a subvolume UUID (32 lowercase hex digits)")
_SHA256 = text(_SHA256_RE, "a SHA-256 (64 lowercase hex digits)")
_SIZE = integer(0, MAX_BYTES)


def _id_date(field: str, backup_id: str) -> date:
    """The day a (well-formed) backup id names."""
    try:
        return date.fromisoformat(backup_id[:10])
    except ValueError:
        raise Invalid(field, f"{show(backup_id)} is not dated with a real day") from None


def _id_kind(backup_id: str) -> Kind:
    return "full" if backup_id[11:15] == "full" else "incremental"


def _kind(field: str, value: object) -> Kind:
    return "full" if choice(("full", "incremental"))(field, value) == "full" else "incremental"


def _compression(field: str, value: object) -> Compression:
    found = choice(COMPRESSIONS)(field, value)
    return next(c for c in COMPRESSIONS if c == found)


def _version(field: str, value: object) -> int:
    version = expect(field, value, int, "an integer")
    if version != VERSION:
        raise Invalid(
            field,
            f"manifest version {version} is not one this btrsendd reads (it reads {VERSION}); "
            "upgrade btrsendd",
        )
    return version


def parse(doc: Object, today: date) -> tuple[Backup, tuple[Volume, ...]]:
    """The backup and volumes ``doc`` describes, every field checked; ``Invalid`` otherwise."""
    doc.req("format", choice((FORMAT,)))
    doc.req("version", _version)
    doc.req("written_by", printable)
    backup_id = doc.req("id", _BACKUP_ID)
    when = doc.req("date", day)
    if _id_date("id", backup_id) != when:
        raise Invalid("id", f"{backup_id} is not dated {when}, the manifest's date")
    tomorrow = today + timedelta(days=1)
    if when > tomorrow:
        raise Invalid(
            "date",
            f"{when} is in the future (later than tomorrow, {tomorrow}): a wrong clock or "
            "--date made this backup, or this machine's clock is behind",
        )
    kind = doc.req("kind", _kind)
    if _id_kind(backup_id) != kind:
        raise Invalid("id", f"{backup_id} does not name a {kind} backup")
    compression = doc.req("compression", _compression)
    recipients = _recipients(doc.sub("encryption"))
    volumes = _volumes(doc, compression, recipients)
    backup = Backup(
        id=backup_id,
        source=doc.req("source", _name("source")),
        date=when,
        kind=kind,
        state="complete",
        compression=compression,
        recipients=recipients,
        storage_class=doc.req("storage_class", choice(STORAGE_CLASSES)),
        raw_bytes=doc.req("raw_bytes", _SIZE),
        stored_bytes=doc.req("stored_bytes", _SIZE),
        volume_count=len(volumes),
        created_at=doc.req("created_at", timestamp),
        completed_at=doc.opt("completed_at", timestamp),
        snapshot=doc.opt("snapshot", _name("snapshot")),
        snapshot_uuid=doc.opt("snapshot_uuid", _UUID),
        stream=doc.opt("stream", _stream, may_be_absent=True),
        # Added within version 1: manifests written before btrsendd kept file indexes (or
        # in a Glacier vault) have none.
        file_index=doc.opt("file_index", _file_index(compression, recipients), may_be_absent=True),
        **_chain_links(doc, backup_id, when, kind),
    )
    for total, part in (("raw_bytes", "raw_length"), ("stored_bytes", "stored_size")):
        recorded = getattr(backup, total)
        summed = sum(getattr(v, part) for v in volumes)
        if recorded != summed:
            raise Invalid(total, f"{recorded}, but the volumes' {part} add up to {summed}")
    if backup.stream is not None and (backup.stream.parent_uuid is None) == (kind == "incremental"):
        raise Invalid(
            "stream.parent_uuid",
            "null, but an incremental backup's stream names its parent"
            if kind == "incremental"
            else "set, but a full backup's stream has no parent",
        )
    return backup, volumes


def _chain_links(doc: Object, backup_id: str, when: date, kind: Kind) -> dict[str, Any]:
    """``parent_id``, ``parent_date``, ``chain`` and ``parent_uuid``, consistent with ``kind``.

    ``parent_uuid`` is the local snapshot an incremental was sent against (null from
    ``backup-stdin``); a full backup has none.
    """
    parent = doc.opt("parent", _BACKUP_ID)
    parent_date = doc.opt("parent_date", day)
    chain = doc.req("chain", _BACKUP_ID)
    parent_uuid = doc.opt("parent_uuid", _UUID)
    links = {"parent_id": parent, "parent_date": parent_date, "chain": chain}
    if kind == "full":
        for name, value in (
            ("parent", parent),
            ("parent_date", parent_date),
            ("parent_uuid", parent_uuid),
        ):
            if value is not None:
                raise Invalid(name, "set, but a full backup has no parent")
        if chain != backup_id:
            raise Invalid("chain", f"{chain}, but a full backup starts its own chain")
        return {**links, "parent_uuid": None}
    if parent is None or parent_date is None:
        raise Invalid("parent" if parent is None else "parent_date", "null in an incremental")
    if _id_date("parent", parent) != parent_date:
        raise Invalid("parent_date", f"{parent_date}, but the parent is {parent}")
    if parent_date >= when:
        raise Invalid("parent_date", f"{parent_date} is not before the backup's date, {when}")
    if _id_kind(chain) != "full" or _id_date("chain", chain) > parent_date:
        raise Invalid("chain", f"{chain} is not a full backup made before the parent")
    return {**links, "parent_uuid": parent_uuid}


def _recipients(encryption: Object) -> tuple[str, ...]:
    mode = encryption.req("mode", choice(("gpg", "none")))
    listed = encryption.req("recipients", a_list)
    field = encryption.field("recipients")
    recipients = tuple(_recipient(f"{field}[{n}]", r) for n, r in enumerate(listed))
    if (mode == "gpg") != bool(recipients):
        raise Invalid(field, "empty with mode gpg" if mode == "gpg" else "listed with mode none")
    return recipients


def _recipient(field: str, value: object) -> str:
    """A fingerprint, key id or user id: the catalog joins recipients with commas."""
    found = printable(field, value)
    if "," in found:
        raise Invalid(field, f"{show(found)} is not a gpg recipient")
    return found


def _volumes(
    doc: Object, compression: Compression, recipients: tuple[str, ...]
) -> tuple[Volume, ...]:
    """The volumes, in order, named as ``backup`` names them and covering the raw stream."""
    listed = doc.req("volumes", a_list)
    if not listed:
        raise Invalid("volumes", "empty: a backup has at least one volume")
    codec = Codec(compression, 0, recipients, None)  # only its suffix is used
    checksum = text(_CHECKSUM_RE, "a storage checksum")
    volumes = []
    offset = 0
    for n, value in enumerate(listed):
        v = Object(value, f"volumes[{n}]")
        index = v.req("index", integer(0, len(listed) - 1))
        if index != n:
            raise Invalid(v.field("index"), f"{index}, but it is volume {n} in the list")
        name = v.req("name", _name("volume"))
        expected = volume_name(n, codec.suffix)
        if name != expected:
            raise Invalid(v.field("name"), f"{name}, but volume {n} is {expected}")
        raw_offset = v.req("raw_offset", _SIZE)
        if raw_offset != offset:
            ends = "the stream starts at 0" if n == 0 else f"volume {n - 1} ends at {offset}"
            raise Invalid(v.field("raw_offset"), f"{raw_offset}, but {ends}")
        volume = Volume(
            index=n,
            name=name,
            raw_offset=raw_offset,
            raw_length=v.req("raw_length", _SIZE),
            raw_sha256=v.req("raw_sha256", _SHA256),
            stored_size=v.req("stored_size", _SIZE),
            stored_sha256=v.req("stored_sha256", _SHA256),
            # Added within version 1: manifests written before it lack the field.
            stored_checksum=v.opt("stored_checksum", checksum, may_be_absent=True),
        )
        offset += volume.raw_length
        if offset > MAX_BYTES:
            raise Invalid(v.field("raw_length"), f"the volumes hold more than {MAX_BYTES} bytes")
        volumes.append(volume)
    return tuple(volumes)


def _file_index(compression: Compression, recipients: tuple[str, ...]) -> Check[FileIndexRef]:
    """The file index, named as ``backup`` names it for the backup's codec; its version is
    the storage's, which the manifest predates."""
    expected = index_name(Codec(compression, 0, recipients, None).extension)

    def check(field: str, value: object) -> FileIndexRef:
        doc = Object(value, field)
        name = doc.req("name", a_string)
        if name != expected:
            raise Invalid(doc.field("name"), f"{show(name)}, but this backup's index is {expected}")
        return FileIndexRef(
            name=name,
            stored_size=doc.req("stored_size", integer(1, MAX_BYTES)),
            stored_sha256=doc.req("stored_sha256", _SHA256),
            raw_size=doc.req("raw_size", integer(1, MAX_BYTES)),
        )

    return check


def _safe_subvolume(field: str, value: object) -> str:
    found = a_string(field, value)
    if not is_safe_component(found):
        raise Invalid(field, f"{show(found)} is not a safe subvolume name")
    return found


def _stream(field: str, value: object) -> StreamIdentity:
    doc = Object(value, field)
    ctransid = integer(0, MAX_CTRANSID)
    stream = StreamIdentity(
        version=doc.req("version", integer(STREAM_VERSIONS.start, STREAM_VERSIONS.stop - 1)),
        name=doc.req("name", _safe_subvolume),
        uuid=doc.req("uuid", _UUID),
        ctransid=doc.req("ctransid", ctransid),
        parent_uuid=doc.opt("parent_uuid", _UUID),
        parent_ctransid=doc.opt("parent_ctransid", ctransid),
    )
    if (stream.parent_uuid is None) != (stream.parent_ctransid is None):
        raise Invalid(
            f"{field}.parent_ctransid",
            "set without parent_uuid" if stream.parent_uuid is None else "null with parent_uuid",
        )
    return stream

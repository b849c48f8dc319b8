"""The storage format: every key btrsendd writes or reads, and every name inside a key.

```
<prefix>/<source>/<backup-id>/vol-00000.btrfs.<gz|zst>[.gpg]   the volumes, in order
<prefix>/<source>/<backup-id>/file-index[.<gz|zst>][.gpg]      the file index, readable at once
<prefix>/<source>/<backup-id>/manifest.json                    written last: the backup exists
```

The rest of btrsendd asks this module for keys and never joins strings itself, so that the
format (which ``catalog rebuild`` on another machine, years later, has to read) has exactly one
definition.  Names read back from storage are parsed here too, and checked (``names.py``)
before anything uses them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

from btrsendd.model import Backup, Kind, Volume
from btrsendd.names import UnsafeName, check_name

MANIFEST_NAME = "manifest.json"
#: The file index's name before the codec's extension (``fileindex/storedform.py``).
INDEX_STEM = "file-index"

_KIND_IN_ID = {"full": "full", "incremental": "inc"}


def object_key(prefix: str, *parts: str) -> str:
    """Join a configured prefix and key segments with '/'; an empty prefix adds nothing.

    The prefix is optional in the configuration, and a leading '/' would make S3 keys start
    with an empty segment (and local paths absolute), so it is skipped rather than joined.
    """
    return "/".join((prefix, *parts) if prefix else parts)


def new_backup_id(day: date, kind: Kind) -> str:
    """``2026-11-26-full-1b4684``: the date, the kind and six random hex digits, so that a
    backup's id says what it is and a second backup of the same day never takes its keys."""
    return f"{day.isoformat()}-{_KIND_IN_ID[kind]}-{secrets.token_hex(3)}"


def volume_name(index: int, suffix: str) -> str:
    """``vol-00003.btrfs.zst.gpg``: the volume's place in the stream and how it is encoded
    (``suffix`` from the codec), so a volume can be read back from its name alone."""
    return f"vol-{index:05d}.{suffix}"


def index_name(extension: str) -> str:
    """``file-index.zst.gpg``: the file index, encoded as the codec's ``extension`` says."""
    return INDEX_STEM + extension


@dataclass(frozen=True)
class Placed:
    """Where a key sits: the source and backup it belongs to and its name there, or just
    the source for a key that is no backup's."""

    source: str
    backup_id: str | None
    name: str


@dataclass(frozen=True)
class Layout:
    """The keys of one configured storage (``storage.prefix``)."""

    prefix: str

    def root(self) -> str:
        """What every key starts with: ``<prefix>/``, or nothing for the whole bucket."""
        return object_key(self.prefix, "")

    def source_root(self, source: str) -> str:
        """``<prefix>/<source>/``: everything of one source."""
        return object_key(self.prefix, source) + "/"

    def backup_dir(self, source: str, backup_id: str) -> str:
        """``<prefix>/<source>/<backup-id>/``: everything of one backup."""
        return object_key(self.prefix, source, backup_id) + "/"

    def backup_dir_of(self, backup: Backup) -> str:
        return self.backup_dir(backup.source, backup.id)

    def key(self, backup: Backup, name: str) -> str:
        """The key of the object ``name`` (a volume or the manifest) of ``backup``."""
        return self.backup_dir_of(backup) + name

    def manifest_key(self, backup: Backup) -> str:
        return self.key(backup, MANIFEST_NAME)

    def index_key(self, backup: Backup) -> str | None:
        """The key of ``backup``'s file index; None for a backup that has none."""
        return None if backup.file_index is None else self.key(backup, backup.file_index.name)

    def longest_key(self, source: str) -> str:
        """The longest key btrsendd writes for ``source`` (a full backup's volume, encrypted
        and zstd-compressed), for backends that limit how long a key may be."""
        sample = self.backup_dir(source, "2000-01-01-full-000000")
        return sample + volume_name(0, "btrfs.zst.gpg")

    def place(self, key: str) -> Placed | None:
        """Where ``key`` (from a listing) sits under this layout's root: a source's name and,
        for a key in a backup's directory, its checked backup id and the name in it; None
        for a key outside the root or one whose source or backup id is not a plain name."""
        root = self.root()
        if not key.startswith(root):
            return None
        source, _, rest = key[len(root) :].partition("/")
        backup_id, slash, name = rest.partition("/")
        try:
            check_name("source", source)
            if not slash:
                return Placed(source, None, rest)
            check_name("backup id", backup_id)
        except UnsafeName:
            return None
        return Placed(source, backup_id, name)


@dataclass(frozen=True)
class Located:
    """A volume with the backup it belongs to and the key it is stored under."""

    backup: Backup
    volume: Volume
    key: str

    @property
    def index(self) -> int:
        return self.volume.index

    @property
    def version(self) -> str | None:
        """The version stored, which reads ask for by id: not whatever is there now."""
        return self.volume.version

    def describe(self) -> str:
        """How errors name it: by backup and volume, the way ``list`` and the bucket do."""
        return f"backup {self.backup.id} ({self.backup.date}), volume {self.index} ({self.key})"

"""btrsendd: incremental, encrypted btrfs backups to AWS cold storage."""

__version__ = "0.1.0"

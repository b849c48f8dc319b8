"""Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.btrfs",
    "tests.fixtures.gpg",
    "tests.fixtures.nspawn",
    "tests.fixtures.s3servers",
    "tests.fixtures.faultproxy",
    "tests.fixtures.vaultserver",
    "tests.support.backups",
]

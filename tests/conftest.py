"""Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.btrfs",
    "tests.fixtures.gpg",
    "tests.fixtures.s3servers",
]

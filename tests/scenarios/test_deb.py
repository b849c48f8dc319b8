"""The Debian package, as an admin uses it: built by `make deb`'s script, installed with
`apt install ./btrsendd_*.deb` in a freshly booted Debian 12 (``tests/fixtures/nspawn.py``),
configured, enabled, triggered, and purged, which removes what the package and the daemon put on
the machine but never the backups.

The container has no network: apt installs the package from the file, and every Depends must
already be in the cached root tree (``nspawn.PACKAGES``).  Marked ``systemd`` like the unit's
own tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.fixtures.nspawn import Machine, booted

REPO = Path(__file__).resolve().parents[2]

#: What the package installs, as the README lists it.
INSTALLED = [
    "/usr/bin/btrsendd",
    "/usr/lib/btrsendd/bin/python",
    "/lib/systemd/system/btrsendd.service",
    "/usr/share/doc/btrsendd/README.md",
    "/usr/share/doc/btrsendd/btrsendd.toml.example",
    "/usr/share/man/man8/btrsendd.8.gz",
    "/usr/share/man/man5/btrsendd.toml.5.gz",
    "/usr/share/bash-completion/completions/btrsendd",
    "/usr/share/zsh/vendor-completions/_btrsendd",
]


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built from this checkout as `make deb` builds it."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_deb.py"), "--out", str(out / "dist"),
         "--work", str(out / "work")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [package] = (out / "dist").glob("btrsendd_*.deb")
    return package


@pytest.fixture
def machine(
    nspawn_root: Path, deb: Path, tmp_path: Path, make_btrfs: MakeBtrfs, gpg_key: GpgKey
) -> Iterator[tuple[Machine, Path]]:
    """A fresh container with the package at /srv/dist, a btrfs at /srv/btrfs (a source, its
    snapshot directory and a local archive) and the public keyring at /srv/keys."""
    fs = make_btrfs("fs")
    make_subvolume(fs / "data")
    (fs / "data" / "hello").write_text("hello from the host\n")
    for directory in ("snapshots", "archive"):
        (fs / directory).mkdir(mode=0o700)
    keys = tmp_path / "keys"
    shutil.copytree(gpg_key.public_home, keys, ignore=shutil.ignore_patterns("S.*", "*.lock"))
    binds = [(fs, "/srv/btrfs"), (deb.parent, "/srv/dist"), (keys, "/srv/keys")]
    with booted(nspawn_root, tmp_path, binds, []) as m:
        yield m, fs


def shown(machine: Machine, command: str) -> str:
    """Run ``command`` (sh) in the container as an admin would, and print it with its output
    (seen with ``pytest -s``, and when the test fails)."""
    proc = machine.run("sh", "-c", f"{command} 2>&1", timeout=300)
    print(f"# {command}\n{proc.stdout}", end="")
    return proc.stdout


def exists(machine: Machine, path: str) -> bool:
    return machine.run("test", "-e", path, check=False).returncode == 0


def mode(machine: Machine, path: str) -> str:
    return machine.run("stat", "-c", "%a %U", path).stdout.strip()


@pytest.mark.systemd
def test_install_enable_back_up_and_purge(machine: tuple[Machine, Path], gpg_key: GpgKey) -> None:
    m, fs = machine
    install = shown(m, "cd /srv && DEBIAN_FRONTEND=noninteractive apt install -y ./dist/*.deb")
    assert "Setting up btrsendd" in install, install
    for path in INSTALLED:
        assert exists(m, path), path
    assert m.run("btrsendd", "--version").stdout.startswith("btrsendd ")
    assert mode(m, "/etc/btrsendd") == "700 root"
    assert mode(m, "/etc/btrsendd/btrsendd.toml") == "600 root"
    assert mode(m, "/var/lib/btrsendd") == "700 root"
    assert (
        "/etc/btrsendd/btrsendd.toml"
        in m.run("cat", "/var/lib/dpkg/info/btrsendd.conffiles").stdout
    )
    # Installed, not started: the example configuration has to be edited first.
    assert m.run("systemctl", "is-enabled", "btrsendd", check=False).stdout.strip() == "disabled"
    assert m.run("systemctl", "is-active", "btrsendd", check=False).stdout.strip() == "inactive"
    unit = m.run("systemctl", "cat", "btrsendd").stdout
    assert "ExecStart=/usr/bin/btrsendd run" in unit
    assert "Documentation=man:btrsendd(8)" in unit

    config = f"""\
        [pipeline]
        compression = "zstd"
        volume_size = "1MiB"
        [encryption]
        recipients = ["{gpg_key.fingerprint}"]
        [storage]
        backend = "local"
        path = "/srv/btrfs/archive"
        [[sources]]
        name = "data"
        path = "/srv/btrfs/data"
        snapshot_dir = "/srv/btrfs/snapshots"
        """
    drop_in = "[Service]\nReadWritePaths=/srv/btrfs/snapshots /srv/btrfs/archive\n"
    m.run(
        "sh", "-c",
        "set -e; cp -r /srv/keys /etc/btrsendd/gnupg; chmod 700 /etc/btrsendd/gnupg; "
        "cat > /etc/btrsendd/btrsendd.toml; mkdir /etc/systemd/system/btrsendd.service.d; "
        f"printf '{drop_in}' > /etc/systemd/system/btrsendd.service.d/paths.conf",
        input=textwrap.dedent(config),
    )  # fmt: skip
    assert "OK" in shown(m, "btrsendd check-config")
    shown(m, "systemctl enable --now btrsendd")
    shown(m, "btrsendd trigger")

    def backups() -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(m.run("btrsendd", "list", "--json").stdout)
        return [b for b in listed if b["state"] == "complete"]

    m.wait_until("a backup after `btrsendd trigger`", backups)
    [backup] = backups()
    shown(m, "btrsendd list")
    manifest = fs / "archive" / "data" / backup["id"] / "manifest.json"
    assert manifest.is_file()
    assert (fs / "snapshots" / backup["date"]).is_dir()

    purge = shown(m, "DEBIAN_FRONTEND=noninteractive apt purge -y btrsendd")
    assert m.run("systemctl", "is-active", "btrsendd", check=False).stdout.strip() == "inactive"
    for path in [
        *INSTALLED,
        "/usr/lib/btrsendd",
        "/etc/btrsendd/btrsendd.toml",
        "/var/lib/btrsendd",
        "/etc/systemd/system/multi-user.target.wants/btrsendd.service",
    ]:
        assert not exists(m, path), f"{path} is still there after purge"
    # What the admin made is theirs: the keyring (and so /etc/btrsendd) and the drop-in.
    assert exists(m, "/etc/btrsendd/gnupg")
    assert "kept in /etc/btrsendd what the package did not install: gnupg" in purge
    assert exists(m, "/etc/systemd/system/btrsendd.service.d/paths.conf")
    assert "kept the drop-ins in /etc/systemd/system/btrsendd.service.d" in purge
    # The backups and the snapshots are never touched.
    assert manifest.is_file()
    assert (fs / "snapshots" / backup["date"] / "hello").read_text() == "hello from the host\n"

    # An archive an admin put inside the state directory outlives a purge too: only regular
    # files at its top (the catalog, locks, daemon.json) are btrsendd's.
    shown(m, "cd /srv && DEBIAN_FRONTEND=noninteractive apt install -y ./dist/*.deb")
    m.run(
        "sh", "-c",
        "set -e; cd /var/lib/btrsendd; touch catalog.db daemon.json lock; "
        "mkdir -p archive/data/2026-11-30-full-abcdef; "
        "echo kept > archive/data/2026-11-30-full-abcdef/manifest.json",
    )  # fmt: skip
    purge = shown(m, "DEBIAN_FRONTEND=noninteractive apt purge -y btrsendd")
    assert "kept in /var/lib/btrsendd what btrsendd did not make: archive" in purge
    assert m.run("ls", "-A", "/var/lib/btrsendd").stdout.split() == ["archive"]
    kept = m.run("cat", "/var/lib/btrsendd/archive/data/2026-11-30-full-abcdef/manifest.json")
    assert kept.stdout == "kept\n"

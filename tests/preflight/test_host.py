"""check-config's checks of the machine itself, on real btrfs filesystems: the configuration
file and state_dir, the sources and their snapshot directories, the programs on PATH, and what
other users could change (symlinks, open parent directories, planted files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

import pytest

from btrsendd.findings import Finding
from btrsendd.preflight import format_findings
from tests.fixtures.btrfs import MakeBtrfs, make_subvolume
from tests.fixtures.gpg import GpgKey
from tests.preflight.helpers import Setup, only

SRC = "sources[0].path (name = 'home')"
SNAPDIR = "sources[0].snapshot_dir (name = 'home')"


def test_clean_configuration_has_no_findings(setup: Setup) -> None:
    assert setup.findings() == []


# -- the file and state_dir ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "level", "text"),
    [
        (0o644, "error", "readable by every user (mode 0644)"),
        (
            0o602,
            "error",
            "writable by every user (mode 0602), who can change what btrsendd does as root",
        ),
        (0o640, "warning", "readable by its group (mode 0640)"),
        (
            0o620,
            "error",
            "writable by its group (mode 0620), who can change what btrsendd does as root",
        ),
    ],
)
def test_config_file_permissions(
    setup: Setup, mode: int, level: Literal["error", "warning"], text: str
) -> None:
    setup.file.chmod(mode)

    expected = Finding(level, str(setup.file), f"{text}; chmod 600 {setup.file}")
    assert setup.findings() == [expected]


def test_state_dir_permissions(setup: Setup) -> None:
    state_dir = Path(setup.data["state_dir"])
    state_dir.chmod(0o755)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("warning", "state_dir")
    assert finding.message.startswith(f"{state_dir} has mode 0755: others can read the catalog")
    assert f"chmod 700 {state_dir} (btrsendd does so itself" in finding.message
    state_dir.rmdir()
    assert setup.findings() == []
    state_dir.write_text("")
    assert [f.level for f in only(setup.findings(), "state_dir")] == ["error"]


# -- sources ---------------------------------------------------------------------------------


def test_source_that_is_a_plain_directory(setup: Setup) -> None:
    plain = setup.fs / "plain"
    plain.mkdir()
    setup.data["sources"][0].update(path=str(plain), snapshot_dir=str(plain / ".btrsendd"))

    assert format_findings(setup.findings()) == [
        f"error: {SRC}: {plain} is not a btrfs subvolume; create it with `btrfs subvolume "
        "create` or point sources.path at one"
    ]


def test_source_missing(setup: Setup) -> None:
    missing = setup.fs / "missing"
    setup.data["sources"][0].update(path=str(missing), snapshot_dir=str(setup.fs / "snaps"))

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", SRC)
    assert f"{missing} does not exist; create it with `btrfs subvolume create" in finding.message


def test_snapshot_dir_on_another_filesystem(setup: Setup, make_btrfs: MakeBtrfs) -> None:
    other = make_btrfs("other")
    setup.data["sources"][0]["snapshot_dir"] = str(other / "snaps")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", SNAPDIR)
    assert f"{other / 'snaps'} is on another filesystem than {setup.fs / 'home'}" in (
        finding.message
    )
    assert f"e.g. {setup.fs / 'home' / '.btrsendd'}" in finding.message


def test_snapshot_dir_in_another_subvolume_of_the_same_filesystem(setup: Setup) -> None:
    snaps = make_subvolume(setup.fs / "snaps")
    snaps.chmod(0o700)
    setup.data["sources"][0]["snapshot_dir"] = str(snaps)

    assert setup.findings() == []


def test_snapshot_dir_parent_missing(setup: Setup) -> None:
    setup.data["sources"][0]["snapshot_dir"] = str(setup.fs / "no" / "snaps")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", SNAPDIR)
    assert f"the parent directory {setup.fs / 'no'} does not exist" in finding.message


def test_snapshot_dir_shared_by_two_sources(setup: Setup) -> None:
    other = make_subvolume(setup.fs / "srv")
    shared = setup.data["sources"][0]["snapshot_dir"]
    setup.data["sources"].append({"name": "srv", "path": str(other), "snapshot_dir": shared})

    shared_findings = [f for f in setup.findings() if "also the snapshot_dir" in f.message]
    [finding] = shared_findings
    assert (finding.level, finding.key) == ("error", "sources[1].snapshot_dir (name = 'srv')")
    assert "also the snapshot_dir of source 'home'" in finding.message


# -- programs --------------------------------------------------------------------------------


def path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *programs: str) -> None:
    """Make PATH hold only ``programs``, as if nothing else were installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in programs:
        found = shutil.which(program)
        assert found is not None, program
        (bin_dir / program).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_nothing_installed(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path_with(tmp_path, monkeypatch)

    assert format_findings(setup.findings()) == [
        "error: pipeline.compression: neither pigz nor gzip is installed; install pigz (or gzip)",
        "error: encryption.mode: gpg is not installed; install gnupg",
        "error: sources: the btrfs command is not installed (btrsendd runs `btrfs send`); "
        "install btrfs-progs",
    ]


def test_plain_gzip_is_enough(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path_with(tmp_path, monkeypatch, "gzip", "gpg", "btrfs")

    assert setup.findings() == []


def test_zstd_missing(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path_with(tmp_path, monkeypatch, "pigz", "gpg", "btrfs")
    setup.data["pipeline"] = {"compression": "zstd"}

    assert format_findings(setup.findings()) == [
        "error: pipeline.compression: zstd is not installed; install zstd or set "
        'compression = "gzip"'
    ]


# -- what others could change ------------------------------------------------------------------


def test_schedule_that_never_fires(setup: Setup) -> None:
    setup.data["schedule"] = {"cron": "0 0 31 4,6,9,11 *"}

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "schedule.cron")
    assert finding.message.startswith("'0 0 31 4,6,9,11 *' never fires")
    assert finding.message.endswith('e.g. "0 0 28 4,6,9,11 *"')


def test_directory_reached_through_someone_elses_symlink(
    setup: Setup, gpg_key: GpgKey, tmp_path: Path
) -> None:
    link = tmp_path / "keys"
    link.symlink_to(gpg_key.public_home)
    os.lchown(link, 65534, 65534)
    setup.data["encryption"]["gnupg_home"] = str(link)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "encryption.gnupg_home")
    assert finding.message.startswith(
        f"{link} is reached through the symlink {link}, which belongs to user nobody, who can "
        "point it elsewhere"
    )


def test_directory_in_a_parent_others_can_write_to(setup: Setup, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    setup.data["state_dir"] = str(shared / "state")

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "state_dir")
    assert f"lies inside {shared}, which others can write to (mode 0777)" in finding.message
    shared.chmod(0o1777)  # sticky, as /tmp: nobody can rename what is not theirs
    assert setup.findings() == []


def test_state_dir_holding_someone_elses_file(setup: Setup) -> None:
    state_dir = Path(setup.data["state_dir"])
    planted = state_dir / "catalog.db"
    planted.write_text("")
    os.chown(planted, 65534, 65534)

    [finding] = setup.findings()
    assert (finding.level, finding.key) == ("error", "state_dir")
    assert finding.message.startswith(f"{state_dir} holds catalog.db, which belongs to user nobody")

"""``btrsendd check-config``: a bad configuration or machine is one clear finding, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.world import World


def test_check_config_ok(world: World) -> None:
    proc = world.run("check-config")
    assert b"OK" in proc.stdout


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda t: t + "\nbogus = 1\n", "bogus: unknown key"),
        (lambda t: t.replace("[schedule]", '[schedule]\ncron = "61 * * * *"'), "schedule.cron"),
        (lambda t: t.replace('compression = "zstd"', 'compression = "lz4"'), "compression"),
        (lambda t: t.replace('volume_size = "1MiB"', 'volume_size = "lots"'), "volume_size"),
        (lambda t: t.replace("[[sources]]", "[[sources]]\nextra = 1"), "sources[0]"),
        (lambda t: t.replace("[storage]\n", '[storage]\nbucket = "b"\n', 1), None),
    ],
)
def test_bad_config_is_one_clear_error_and_exit_2(
    world: World, mutation: object, expected: str | None
) -> None:
    text = world.write_config().read_text()
    world.config.write_text(mutation(text))  # type: ignore[operator]
    proc = world.run("check-config", check=False)
    if expected is None:  # a harmless extra key of the right kind is fine
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2
    assert expected in proc.stderr.decode()
    assert str(world.config) in proc.stderr.decode()


def test_machine_problems_are_reported_with_key_and_fix(world: World, tmp_path: Path) -> None:
    world.write_config()
    text = world.config.read_text()
    plain = tmp_path / "plain-dir"
    plain.mkdir()
    world.config.write_text(text.replace(f'path = "{world.source}"', f'path = "{plain}"'))
    world.config.chmod(0o644)
    proc = world.run("check-config", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "not a btrfs subvolume" in err and "sources[0].path" in err
    assert "chmod 600" in err


def test_every_mistake_and_what_the_machine_says_in_one_run(world: World, tmp_path: Path) -> None:
    """Four mistakes, two in the file and two on the machine: one run reports them all, and
    says what it could not check because of the file's."""
    text = world.write_config().read_text()
    plain = tmp_path / "plain-dir"
    plain.mkdir()
    text = text.replace(f'path = "{world.source}"', f'path = "{plain}"')
    text = text.replace("[schedule]\n", "[schedule]\ncrn = '0 0 * * *'\n")
    text = text.replace('compression = "zstd"', 'compression = "zstdd"')
    world.config.write_text(text)
    world.config.chmod(0o644)
    example = "every key is explained in /usr/share/doc/btrsendd/btrsendd.toml.example"
    proc = world.run("check-config", check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        f'btrsendd: error: {world.config}: schedule.crn: unknown key; did you mean "cron"? '
        f"({example})",
        f"btrsendd: error: {world.config}: pipeline.compression: Input should be 'gzip', 'zstd' "
        "or 'none'; did you mean \"zstd\"?",
        f"btrsendd: error: {world.config}: readable by every user (mode 0644); chmod 600 "
        f"{world.config}",
        f"btrsendd: error: sources[0].path (name = 'data'): {plain} is not a btrfs subvolume; "
        "create it with `btrfs subvolume create` or point sources.path at one",
    ]
    assert proc.stdout.decode() == (
        f"{world.config}: 4 error(s), 0 warning(s); not checked because of them: the schedule, "
        "early deletion and Object Lock, the compressor, nested subvolumes and what lies inside "
        "a source, storage access; fix them and run check-config again\n"
    )

    as_json = world.run("check-config", "--json", check=False)
    assert as_json.returncode == 2 and as_json.stderr == b""
    report = json.loads(as_json.stdout)
    assert report["file"] == str(world.config) and report["ok"] is False
    assert [(f["level"], f["key"]) for f in report["findings"]] == [
        ("error", "schedule.crn"),
        ("error", "pipeline.compression"),
        ("error", str(world.config)),
        ("error", "sources[0].path (name = 'data')"),
    ]
    assert report["findings"][0]["message"] == f'unknown key; did you mean "cron"? ({example})'
    assert report["skipped"] == [
        "the schedule",
        "early deletion and Object Lock",
        "the compressor",
        "nested subvolumes and what lies inside a source",
        "storage access",
    ]


def test_json_of_a_sound_configuration(world: World) -> None:
    world.encryption = f'mode = "none"\ngnupg_home = "{world.key.public_home}"'
    proc = world.run("check-config", "--json")
    report = json.loads(proc.stdout)
    assert report == {
        "file": str(world.config),
        "ok": True,
        "findings": [
            {
                "level": "warning",
                "key": "encryption.mode",
                "message": report["findings"][0]["message"],
            }
        ],
        "skipped": [],
    }
    assert "unencrypted" in report["findings"][0]["message"]


def test_a_file_that_cannot_be_read(world: World, tmp_path: Path) -> None:
    world.write_config()
    world.config.write_text("[storage\n")
    proc = world.run("check-config", check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith(f"btrsendd: error: {world.config}: not valid TOML: ")
    assert proc.stdout.decode() == (
        f"{world.config}: 1 error(s), 0 warning(s); not checked because of them: its contents; "
        "fix them and run check-config again\n"
    )
    missing = tmp_path / "missing.toml"
    report = json.loads(
        world.run("--config", str(missing), "check-config", "--json", check=False).stdout
    )
    assert report["findings"] == [
        {
            "level": "error",
            "key": str(missing),
            "message": "no such file; copy /usr/share/doc/btrsendd/btrsendd.toml.example there "
            "and edit it, or pass --config PATH (or set BTRSENDD_CONFIG)",
        }
    ]

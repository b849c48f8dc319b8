"""``btrsendd check-config``: a bad configuration or machine is one clear finding, exit 2."""

from __future__ import annotations

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

"""``verify --json``: what scripts read instead of the ORPHAN and PROBLEM lines."""

from __future__ import annotations

import json

from tests.support.world import World


def test_verify_json_per_source_and_summary(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    [b] = world.list()
    report = json.loads(world.run("verify", "--json").stdout)
    [note] = report["sources"][0].pop("notes")
    assert note.startswith("1 backup(s), 1 volume(s), ") and note.endswith(
        ": checked by size and SHA-256"
    )
    assert report == {
        "sources": [
            {"source": "data", "problems": [], "orphans": [], "uploads": [], "versions": []}
        ],
        "summary": {"problems": 0, "orphans": 0, "ok": True},
    }

    archive = world.work / "archive" / "data"
    (archive / "stray.bin").write_bytes(b"stray")
    volume = next((archive / b["id"]).glob("vol-*"))
    volume.write_bytes(volume.read_bytes() + b"x")
    proc = world.run("verify", "--json", check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    [data] = report["sources"]
    assert data["orphans"] == [{"key": "data/stray.bin", "size": 5, "storage_class": "STANDARD"}]
    size = volume.stat().st_size
    assert data["problems"] == [
        f"backup {b['id']} (2000-01-01), volume 0 (data/{b['id']}/{volume.name}): {size} bytes "
        f"stored, but {size - 1} recorded"
    ]
    assert report["summary"] == {"problems": 1, "orphans": 1, "ok": False}

    cleaned = json.loads(world.run("verify", "--json", "--clean", check=False).stdout)
    assert cleaned["sources"][0]["notes"][-1] == "deleted 1 orphan(s)"
    assert not (archive / "stray.bin").exists()

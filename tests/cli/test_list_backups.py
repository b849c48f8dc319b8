"""``btrsendd list --json``: the contract scripts rely on."""

from __future__ import annotations

from tests.support.world import World


def test_list_json_contract(world: World) -> None:
    world.run("backup", "--date", "2000-01-01")
    [b] = world.list()
    for key in ("id", "source", "date", "kind", "parent", "chain", "raw_bytes", "stored_bytes",
                "volumes", "state"):  # fmt: skip
        assert key in b
    assert (b["source"], b["date"], b["kind"], b["parent"], b["state"]) == (
        "data", "2000-01-01", "full", None, "complete",
    )  # fmt: skip
    assert b["chain"] == b["id"] and b["volumes"] >= 1
    assert b["file_index"] is True  # a backup made now can be searched with find

"""The example configuration is where each key is explained: every key of the schema must be
explained there, with a default that is the schema's, and nothing written there may be left out
of btrsendd.toml(5)."""

from __future__ import annotations

import textwrap

from btrsendd.docgen.config_model import read_config_doc
from btrsendd.docgen.example_prose import read_example
from tests.docgen.conftest import EXAMPLE, config_keys


def test_every_key_is_explained_with_its_default() -> None:
    doc = read_config_doc(EXAMPLE.read_text())
    assert doc.unattached == (), "comments in the example that belong to no key or table"
    keys = {(k.section, k.name): k for k in doc.keys()}
    assert set(keys) == set(config_keys())
    intros = {section.name: " ".join(section.intro) for section in doc.sections}
    for key in keys.values():
        said = " ".join(key.paragraphs)
        assert said, f"{key.dotted}: no comment above it in config/btrsendd.toml"
        if key.required:
            continue
        # Said of the key, or of all the keys of its table ("Default for each: ...").
        assert any(
            "Default" in text or "No default" in text for text in (said, intros[key.section])
        ), f"{key.dotted}: say its default"
        # A default written out must be the one the schema applies.
        if "Default:" in said and key.default not in (None, "[]", "{}"):
            assert f"Default: {key.default}" in said, f"{key.dotted}: the default is {key.default}"


def test_prose_goes_to_its_key_table_or_example() -> None:
    example = textwrap.dedent("""\
        # Title line.
        #
        # What the file is.

        # Where state goes.
        # Default: "/x".
        state_dir = "/x"

        [table]
        # About the table:
        # two lines.
        #
        # The first key.
        first = 1
        # The second and third, unset.
        # second = [1]
        # third = 3
        # [table.nested]
        # inner = 2

        # Orphaned words.

        # Before the array.
        [[items]]
        # Its name.
        name = "a"
        """)
    known = {"": ["state_dir"], "table": ["first", "second", "third"], "items": ["name"]}
    prose = read_example(example, known)
    assert prose.preamble == ["Title line.", "What the file is."]
    assert prose.keys[("", "state_dir")].paragraphs == ['Where state goes. Default: "/x".']
    assert prose.keys[("", "state_dir")].commented is False
    # The first block under a header: all but its last paragraph introduce the table.
    assert prose.intros["table"] == ["About the table: two lines."]
    assert prose.keys[("table", "first")].paragraphs == ["The first key."]
    second, third = prose.keys[("table", "second")], prose.keys[("table", "third")]
    assert second.paragraphs == third.paragraphs == ["The second and third, unset."]
    assert second.examples == ["second = [1]"]
    assert third.examples == ["third = 3", "[table.nested]", "inner = 2"]
    assert second.commented and third.commented
    assert prose.unattached == ["Orphaned words."]
    assert prose.intros["items"] == ["Before the array."]
    assert prose.keys[("items", "name")].paragraphs == ["Its name."]

"""The prose of the annotated example configuration (``config/btrsendd.toml``), per key.

The example is where every key is explained, with its default, for the people who edit the
file; ``btrsendd.toml(5)`` takes its descriptions from there rather than keeping a second
copy that would drift from the first.  The example follows one convention, which this module
reads (and ``tests/test_docgen.py`` holds it to):

- a key's description is the comment block directly above its line (``key = value``, or
  ``# key = value`` for a key left unset), from the previous key of the block on; key lines
  in a row share the comment above the first;
- commented lines after a key's line that look like TOML (``# [table]``, ``# sub = 1``) are
  more of its example;
- a section's introduction is a comment block directly above its header, or the paragraphs
  (separated by a bare ``#``) of the first block under the header but the last one;
- the first block of the file, followed by a blank line, is the preamble.

Any other comment block is ``unattached``: the test fails on one, so no explanation written in
the example is left out of the man page unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*=")


@dataclass
class KeyProse:
    """What the example says about one key."""

    paragraphs: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # its line(s), without the comment mark
    commented: bool = True  # left unset in the example (an example of use, not a setting)


@dataclass
class Prose:
    preamble: list[str] = field(default_factory=list)
    intros: dict[str, list[str]] = field(default_factory=dict)  # section -> paragraphs
    keys: dict[tuple[str, str], KeyProse] = field(default_factory=dict)  # (section, key)
    unattached: list[str] = field(default_factory=list)


def _paragraphs(lines: list[str]) -> list[str]:
    """Comment lines joined into paragraphs; a bare ``#`` (an empty line here) ends one."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


class _Reader:
    def __init__(self, keys: Mapping[str, Collection[str]]) -> None:
        self.known = keys
        self.prose = Prose()
        self.section = ""
        self.pending: list[str] = []  # comment lines not yet given to a key or section
        self.current: KeyProse | None = None  # the key whose example lines may follow
        self.fresh_section = False  # no key of the section has been read yet
        self.seen_content = False  # any key or header so far (else a block is the preamble)

    def blank(self) -> None:
        if self.pending:
            text = " ".join(_paragraphs(self.pending))
            if not self.seen_content and not self.prose.preamble:
                self.prose.preamble = _paragraphs(self.pending)
            elif text:
                self.prose.unattached.append(text)
        self.pending = []
        self.current = None

    def comment(self, text: str) -> None:
        stripped = text.strip()
        key = _KEY.match(stripped)
        if key and key.group(1) in self.known.get(self.section, ()):
            self.key(key.group(1), stripped, commented=True)
        elif self.current is not None and (key or _HEADER.match(stripped)):
            self.current.examples.append(stripped)
        else:
            self.current = None
            self.pending.append(text)

    def key(self, name: str, line: str, commented: bool) -> None:
        paragraphs = _paragraphs(self.pending)
        if not paragraphs and self.current is not None:
            paragraphs = list(self.current.paragraphs)  # lines in a row share their comment
        if self.fresh_section and len(paragraphs) > 1:
            self.prose.intros.setdefault(self.section, []).extend(paragraphs[:-1])
            paragraphs = paragraphs[-1:]
        prose = self.prose.keys.setdefault((self.section, name), KeyProse())
        prose.paragraphs.extend(paragraphs)
        prose.examples.append(line)
        prose.commented = prose.commented and commented
        self.pending = []
        self.current = prose
        self.fresh_section = False
        self.seen_content = True

    def header(self, name: str) -> None:
        self.section = name
        if self.pending:
            self.prose.intros.setdefault(name, []).extend(_paragraphs(self.pending))
        self.pending = []
        self.current = None
        self.fresh_section = True
        self.seen_content = True


def read_example(text: str, keys: Mapping[str, Collection[str]]) -> Prose:
    """The prose of the example ``text``; ``keys`` maps each section (``""`` for the top level,
    ``"sources"`` for ``[[sources]]``) to the names of its keys, so that a commented-out key is
    told from a commented example of something else."""
    reader = _Reader(keys)
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            reader.blank()
        elif line.startswith("#"):
            reader.comment(line[1:].removeprefix(" "))
        elif header := _HEADER.match(line):
            reader.header(header.group(1))
        elif key := _KEY.match(line):
            reader.key(key.group(1), line, commented=False)
    reader.blank()
    return reader.prose

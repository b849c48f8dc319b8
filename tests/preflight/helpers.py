"""What the check-config tests share: a machine on which the configuration is entirely sound
(``Setup``), which each test then spoils in one way, and the findings about one key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btrsendd.config import Config
from btrsendd.findings import Finding
from btrsendd.preflight import check


@dataclass
class Setup:
    """A machine on which the configuration ``data`` describes is entirely sound."""

    data: dict[str, Any]
    file: Path
    fs: Path

    def config(self) -> Config:
        return Config.model_validate(self.data).model_copy(update={"source_file": self.file})

    def findings(self) -> list[Finding]:
        return check(self.config())


def only(findings: list[Finding], key: str) -> list[Finding]:
    return [f for f in findings if f.key == key]

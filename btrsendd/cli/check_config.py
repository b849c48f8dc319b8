"""``btrsendd check-config``: the configuration and the machine, checked before a first run.

Everything is reported in one run: every mistake in the file, and what the machine says
about the parts of the file that are sound (``preflight.Parts``); what could not be checked
because of a mistake is named, so four mistakes take one run, not three.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from btrsendd.cli.common import add_command

if TYPE_CHECKING:
    from btrsendd.cli.common import Commands
    from btrsendd.config import Config
    from btrsendd.findings import Finding
    from btrsendd.preflight import Parts
    from btrsendd.storage.base import Storage


def register(commands: Commands) -> None:
    p = add_command(
        commands,
        "check-config",
        run,
        "validate the configuration and the machine: sources, keys, storage access; every "
        "problem in one run",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: the findings, and what could not be checked",
    )


class Report(NamedTuple):
    """Everything check-config found about one file (a NamedTuple: no dataclasses to import
    at start-up, which every command pays for)."""

    path: Path
    #: The file's mistakes (its schema's), each on the key as written.
    mistakes: list[Finding]
    #: What the machine checks found (and what kept the file from being read at all).
    findings: list[Finding]
    #: What could not be checked on the machine because of the mistakes.
    skipped: list[str]
    config: Config | None
    storage: Storage | None

    @property
    def everything(self) -> list[Finding]:
        return self.mistakes + self.findings

    @property
    def errors(self) -> int:
        return sum(f.level == "error" for f in self.everything)


def _open_storage(parts: Parts) -> Storage | None:
    """The storage the parts name, if those it needs to be opened are sound."""
    from btrsendd.storage import open_storage

    if parts.storage is None or parts.pipeline is None or parts.state_dir is None:
        return None
    return open_storage(parts.storage, parts.pipeline, parts.state_dir)


def check(path: Path) -> Report:
    """The file at ``path`` and this machine, as far as each can be checked."""
    from btrsendd import preflight
    from btrsendd.config import ConfigFileError, read_config_data, validate
    from btrsendd.findings import error
    from btrsendd.storage.base import AccessCheck

    try:
        validated = validate(read_config_data(path), path)
    except ConfigFileError as exc:
        # Only who may change the file can be checked.
        found = preflight.check_parts(preflight.Parts(path)).findings
        return Report(
            path, [], [error(str(path), exc.reason), *found], ["its contents"], None, None
        )
    config = validated.config
    parts = preflight.Parts.of(config) if config else preflight.Parts.sound(path, validated.intact)
    storage = _open_storage(parts)
    access = storage.check_access if isinstance(storage, AccessCheck) else None
    checked = preflight.check_parts(parts, check_storage=access)
    skipped = checked.skipped + ([] if storage else ["storage access"])
    return Report(path, validated.problems, checked.findings, skipped, config, storage)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "file": str(report.path),
        "ok": not report.errors,
        "findings": [
            {"level": f.level, "key": f.key, "message": f.message} for f in report.everything
        ],
        "skipped": report.skipped,
    }


def verdict(report: Report) -> str:
    """The last line: OK and what was checked, or how many errors and what was not."""
    config, storage = report.config, report.storage
    if not report.errors and config is not None and storage is not None:
        names = ", ".join(s.name for s in config.sources)
        return (
            f"{report.path}: OK ({len(config.sources)} source(s): {names}; "
            f"storage: {storage.description})"
        )
    warnings = len(report.everything) - report.errors
    unchecked = ", ".join(report.skipped)
    return (
        f"{report.path}: {report.errors} error(s), {warnings} warning(s)"
        + (f"; not checked because of them: {unchecked}" if unchecked else "")
        + "; fix them and run check-config again"
    )


def run(args: argparse.Namespace) -> int:
    from btrsendd.config import config_path
    from btrsendd.preflight import format_findings

    report = check(config_path(args.config))
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        # The file's mistakes read as every other command reports them: after its path.
        for f in report.mistakes:
            print(f"btrsendd: {f.level}: {report.path}: {f.key}: {f.message}", file=sys.stderr)
        for line in format_findings(report.findings):
            print(f"btrsendd: {line}", file=sys.stderr)
        print(verdict(report))
    return 2 if report.errors else 0

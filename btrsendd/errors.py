"""Error types that carry the exit status the command line promises.

Every error a user can cause or meet is one of these: the CLI prints its message as one line
and exits with its status, never with a traceback.  Anything else is a bug.
"""


class BtrsenddError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_status = 1


class UsageError(BtrsenddError):
    """Bad arguments or configuration: the user must change something (exit 2)."""

    exit_status = 2


class ConfigError(UsageError):
    """The configuration file is missing, unreadable or invalid (exit 2)."""


class OperationalError(BtrsenddError):
    """Something failed while doing the work: disk, network, subprocess (exit 1)."""

    exit_status = 1


class Stopped(OperationalError):
    """The work was stopped on request (the daemon is stopping), not failed: nothing to
    alert anyone about (no ``on_failure`` hook)."""


class PipelineError(OperationalError):
    """A stage of send | compress | encrypt (or the reverse) failed; names the stage."""

    def __init__(self, stage: str, detail: str) -> None:
        self.stage = stage
        self.detail = detail
        super().__init__(f"{stage} failed: {detail}" if detail else f"{stage} failed")


class StorageError(OperationalError):
    """The storage backend refused or could not complete an operation."""


class NotThawedError(StorageError):
    """An archived object (DEEP_ARCHIVE, GLACIER) was read before a restore made it readable."""

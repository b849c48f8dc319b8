"""SIGINT and SIGTERM of a foreground command: stop cleanly, say what happened, exit 130/143.

By default Python turns SIGINT into ``KeyboardInterrupt`` but lets SIGTERM end the process on
the spot: a backup stopped by ``kill`` or ``timeout`` exited silently and left its compressor
running and a temporary volume file behind.  Here both signals raise ``Interrupted`` in the main
thread instead.  It is a ``BaseException``, so no ``except Exception`` swallows it, and every
``with`` and ``finally`` on its way out does its job: the pipeline kills and reaps its stages,
storage removes temporary objects and aborts multipart uploads, restore removes its working
directory, the catalog rolls back the transaction in flight.

Whoever knows what the interruption left behind says so with ``Interrupted.tell`` as it passes
(a backup: how many volumes are stored and that the next run resumes them); the command line
prints that in one line.  Further signals are ignored meanwhile, so a second Ctrl-C cannot cut
the clean-up short; SIGKILL still can, and the next run copes with that too.

The daemon (``btrsendd run``) handles its own signals and does not install these handlers;
its stop reaches a running upload as ``Cancelled``, defined here so that the engine can tell
a stop (a warning: routine, resumed later) from a failure (an error).
"""

from __future__ import annotations

import signal
from types import FrameType

from btrsendd.errors import Stopped

#: The signals a foreground command stops on.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived; raised in the main thread wherever it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        #: What was interrupted and what happens next, told by the code it passed through.
        self.aftermath: list[str] = []
        #: Whether the interruption is recorded for ``status`` already (``interruptions.py``).
        self.recorded = False

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a command a signal ended."""
        return 128 + self.signum

    def tell(self, what: str) -> None:
        self.aftermath.append(what)


class Cancelled(Stopped):
    """Raised into a running upload when the daemon is asked to stop (by ``signame``).

    An ``OperationalError``, unlike ``Interrupted``: it is raised from the upload's progress
    hook in the pipeline's feeder thread, and must end the upload as a failing stage would.
    A ``Stopped``: no ``on_failure`` hook is told of it.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(f"the daemon is stopping ({signame}); the upload was interrupted")
        self.signame = signame


def _raise(signum: int, _frame: FrameType | None) -> None:
    # The first signal stops the command; the clean-up it starts must not be stopped halfway.
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def install() -> None:
    """Turn SIGINT and SIGTERM into ``Interrupted`` for the rest of the process."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise)

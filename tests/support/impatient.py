"""btrsendd runs whose S3 client gives up within a test, for the network fault tests.

The fault proxy (``tests/fixtures/faultproxy.py``) makes the stalls and outages; with the
client's real timeouts and retry budget, reaching the point where it gives up on them would
take minutes.
"""

from __future__ import annotations

from tests.support.world import World

#: Written as ``sitecustomize.py`` on the PYTHONPATH of a btrsendd run (Python imports it at
#: start-up): makes its S3 client impatient, so that a test's stall outlasts the read timeout
#: and an outage outlasts the retry budget in seconds, not minutes.  The real defaults
#: (``btrsendd.storage.s3.bucket``) are what users get; only the numbers change, not the code
#: paths.
_IMPATIENT = """\
from btrsendd.storage.s3 import bucket as s3

s3.UPLOAD_RETRY_DELAY = {delay!r}
s3.RETRY_MAX_DELAY = {max_delay!r}
_real = s3.S3Storage


def _impatient(*args, **kwargs):
    return _real(*args, **{{**kwargs, **{knobs!r}}})


s3.S3Storage = _impatient
"""


def impatient_s3(world: World, *, budget: float, timeout: float, delay: float = 0.1) -> None:
    """Make the world's btrsendd runs retry for ``budget`` seconds, time out reads and connects
    after ``timeout`` seconds and back off from ``delay`` seconds (up to ten times that)."""
    hooks = world.work / "pyhooks"
    hooks.mkdir(exist_ok=True)
    knobs = {"retry_budget": budget, "connect_timeout": timeout, "read_timeout": timeout}
    code = _IMPATIENT.format(delay=delay, max_delay=10 * delay, knobs=knobs)
    (hooks / "sitecustomize.py").write_text(code)
    world.env["PYTHONPATH"] = str(hooks)

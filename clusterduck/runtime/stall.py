"""Notices a bundled or sequential worker that waits for an id which may never come.

Under at-most-once, an id lost upstream (a crashed instance's in-memory messages, a
function that returned None for it) leaves a sequential worker waiting at that id
forever unless ``gap_timeout`` is set, and leaves a bundle incomplete until end of
stream. Nothing is wrong with the worker itself, so nothing else tells: its backlog
grows and its sink stops. This watch turns that into a fact for ``status`` (a problem
line) and one WARNING in the worker's own log.

A pure object, asked at every report (twice a second, never per message): what the
worker waits for now (:func:`waiting_for`), and since when it has waited for that same
id. It is a stall once the same id was waited for ``GAP_WARN_SECONDS``: ordinary
reordering between instances resolves in milliseconds, so 5 s is far outside it and
still soon enough for a person watching ``status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..protocol import GapStatus
from .bundler import Bundler
from .sequencer import Sequencer

__all__ = ["GAP_WARN_SECONDS", "GapWatch", "waiting_for"]

GAP_WARN_SECONDS = 5.0


def waiting_for(
    bundler: Bundler | None, sequencer: Sequencer | None
) -> tuple[int, tuple[str, ...]] | None:
    """The id this worker is held up by, and which inputs' parts of it are missing
    (``()``: it came from no input), or None when nothing waits behind a missing id.

    A sequential worker is held up by its cursor whenever later ids wait. A bundled one
    by its lowest incomplete bundle once a later id completed (then the parts came in
    around it: the missing part is not merely slow to come in order)."""
    if sequencer is not None and sequencer.waiting():
        seq = sequencer.cursor
        return seq, bundler.missing(seq) if bundler is not None else ()
    if bundler is None:
        return None
    lowest = bundler.lowest()
    if lowest is None or not bundler.passed(lowest):
        return None
    return lowest, bundler.missing(lowest)


class GapWatch:
    """How long a worker has waited for the same id; says when to warn, once per id."""

    def __init__(
        self, *, after: float = GAP_WARN_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.after = after
        self._clock = clock
        self._seq: int | None = None
        self._since = 0.0
        self._warned = False

    def see(self, waiting: tuple[int, tuple[str, ...]] | None) -> GapStatus | None:
        """Record what the worker waits for now; the stall, once it has lasted ``after``."""
        now = self._clock()
        if waiting is None:
            self._seq = None
            return None
        seq, missing = waiting
        if seq != self._seq:
            self._seq, self._since, self._warned = seq, now, False
        waited = now - self._since
        if waited < self.after:
            return None
        return GapStatus(seq, round(waited, 1), missing)

    def warn_now(self) -> bool:
        """True once per stalled id: the first time it is asked after a stall began."""
        if self._seq is None or self._warned or self._clock() - self._since < self.after:
            return False
        self._warned = True
        return True

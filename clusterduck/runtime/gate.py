"""Which inputs a bundled worker reads now: the pause/starve policy, without sockets.

A bundled worker stops reading an input that runs ahead so that the lagging one catches
up (a bundle needs every part; reading on would only grow the bundler). That holds only
while every input is open — an ended input can no longer complete anything — and only
until the other inputs stay silent for ``grace`` seconds: an input that filters ids out
would otherwise never let the paused one resume (a deadlock). Once starved, the gate
reads everything until no input is ahead any more; bundle eviction bounds the memory
meanwhile.

Pure and clock-injected, like the bundler and the sequencer, so the policy is tested
over arbitrary arrival orders (tests/test_gate.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Set

__all__ = ["PAUSE_GRACE", "InputGate"]

# How long a bundled worker keeps an input that runs ahead paused while its other inputs
# deliver nothing, before it reads on (memory then stays bounded by bundle eviction).
PAUSE_GRACE = 2.0


class InputGate:
    """One call of :meth:`plan` before each wait for input, one of :meth:`heard` after."""

    def __init__(
        self,
        inputs: Iterable[str],
        *,
        grace: float = PAUSE_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inputs = frozenset(inputs)
        self.grace = grace
        self.clock = clock
        self.starving = False  # the others stayed silent too long: read everything
        self._starved_since: float | None = None
        self._ahead: frozenset[str] = frozenset()

    def plan(self, open_inputs: Set[str], is_ahead: Callable[[str], bool]) -> Set[str]:
        """The inputs to read now, out of ``open_inputs``."""
        if len(open_inputs) == len(self.inputs):
            self._ahead = frozenset(n for n in open_inputs if is_ahead(n))
        else:
            self._ahead = frozenset()
        if self.starving or not self._ahead:
            return open_inputs
        return open_inputs - self._ahead

    def heard(self, inputs: Set[str]) -> None:
        """``inputs`` delivered something since :meth:`plan` (maybe nothing)."""
        ahead = self._ahead
        if not ahead or (inputs - ahead and not self.starving):
            # Caught up, or the lagging inputs speak: pausing works, keep it.
            self._starved_since, self.starving = None, False
        elif not self.starving:
            now = self.clock()
            if self._starved_since is None:
                self._starved_since = now
            self.starving = now - self._starved_since > self.grace

    @property
    def paused(self) -> frozenset[str]:
        """Inputs left unread by the last plan."""
        return frozenset() if self.starving else self._ahead

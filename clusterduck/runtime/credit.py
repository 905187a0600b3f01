"""Credit-based flow control: how many messages a sender may have in flight to an instance.

Every downstream instance grants each of its upstream instances *credit*, sized from its
own measured processing time so that the work queued for it stays short (``TARGET_QUEUE``
of its work, at least 1 message, at most ``MAX_CREDIT``). A sender never has more than
that in flight towards an instance, so a slow consumer receives small frames and a fast
one large frames, a stalled one receives nothing more, and ``shuffle`` sends to the
instance with credit and the least work queued — slow work spreads over every instance,
down to one message at a time. In the spirit of Flink's credit-based flow control and Reactive
Streams' ``request(n)``; Storm's ``max.spout.pending`` is the spout-wide cap on top.

Counting. Both sides count in the *sender's* numbering: a sender numbers the messages it
sends to one instance 1, 2, 3 … and writes the running total into every frame. The
receiver answers with a grant ``(processed, limit)``: it has processed every message up to
number ``processed`` and accepts up to number ``limit``. Grants are absolute, so a lost,
late or repeated grant never leaks or invents credit, and the latest one wins (a channel is
ordered). ``in flight`` is ``sent - processed``, never more than the granted window.

Return path. Credit travels back on the *same* connection as the data: the data sockets
are DEALER (sender, identity ``component/index``) → ROUTER (receiver), so the receiver
addresses a grant to the identity the frame came from. We chose this over a second
PUSH/PULL pair per edge because it needs no extra endpoint, bind, handshake or wiring
step, CURVE and reconnects cover it for free, and grants stay ordered with the data they
answer — the same reason Flink sends credit announcements on its data channel.

Restarts. A sender that waits on an instance without credit sends a *probe* (a frame of
zero messages carrying its running total) every ``PROBE_INTERVAL``; the receiver answers
it like any frame, once everything sent before it was processed. A restarted receiver
(which knows nothing) therefore resynchronises, and a restarted sender starts again from
``INITIAL_CREDIT`` with its own numbering, which the receiver adopts from its first frame.

The frames themselves (data, probe, grant) are laid out in :mod:`clusterduck.protocol`.

Everything here is pure: no sockets, an injected clock, hypothesis tests in
``tests/test_credit.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..protocol import Grant

__all__ = [
    "INITIAL_CREDIT",
    "MAX_CREDIT",
    "PROBE_INTERVAL",
    "TARGET_QUEUE",
    "CreditGrantor",
    "CreditLedger",
    "Grant",
]

#: Work a consumer lets queue for it, in seconds of its own measured processing time.
TARGET_QUEUE = 0.02
#: The most credit one instance grants (all its senders together), in messages.
MAX_CREDIT = 10_000
#: Credit a sender assumes before the first grant: one message, as the consumer's speed
#: is unknown. A guess of more queued that many messages of work before the consumer had
#: measured itself: with 100 and half a second per message, 50 s of work per instance
#: that a graceful down had to drain, and the first frame went whole to one instance of
#: several. The first grant (after that message) sizes the window from the measurement,
#: so a fast consumer pays one round trip, once.
INITIAL_CREDIT = 1
#: How often a sender without credit asks again (covers a restarted consumer).
PROBE_INTERVAL = 0.5
# Weight of the newest measurement in the moving average of seconds per message.
_EWMA = 0.2


class CreditLedger:
    """The sender's side for one downstream component: credit per instance.

    ``unlimited`` is for a peer that grants nothing (the test collector): free credit is
    then always ``MAX_CREDIT`` and nothing is ever counted as waiting on it.
    """

    def __init__(
        self,
        instances: int,
        *,
        initial: int = INITIAL_CREDIT,
        unlimited: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        if initial < 1:
            raise ValueError(f"initial credit must be >= 1, got {initial}")
        self.unlimited = unlimited
        self.sent = [0] * instances
        self.processed = [0] * instances
        self.limit = [initial] * instances
        self.cost = [0.0] * instances  # the instance's seconds per message, as it said
        self._clock = clock
        self._last_probe = [clock()] * instances
        self._last_grant = [clock()] * instances  # when instance i last said anything
        self._last_chosen = [clock()] * instances  # when choose() last picked instance i
        self._cursor = 0  # round-robin among instances with equal free credit

    @property
    def instances(self) -> int:
        return len(self.sent)

    def free(self, i: int) -> int:
        if self.unlimited:
            return MAX_CREDIT
        return max(0, self.limit[i] - self.sent[i])

    def in_flight(self, i: int) -> int:
        """Messages sent to instance ``i`` that it has not said it processed."""
        return 0 if self.unlimited else max(0, self.sent[i] - self.processed[i])

    def window(self, i: int) -> int:
        """The credit instance ``i`` last granted on top of what it processed."""
        return MAX_CREDIT if self.unlimited else max(0, self.limit[i] - self.processed[i])

    def queue_seconds(self, i: int) -> float:
        """Estimated wait of a message sent to ``i`` now: its in-flight work."""
        return self.in_flight(i) * self.cost[i]

    def take(self, i: int, n: int) -> int:
        """Record ``n`` messages sent to ``i``; returns the running total for the frame.

        Raises ValueError when that exceeds the credit: a sender bug, never a peer's."""
        if n > self.free(i):
            raise ValueError(f"sending {n} to instance {i} with {self.free(i)} credit")
        self.sent[i] += n
        return self.sent[i]

    def grant(self, i: int, grant: Grant) -> None:
        """Apply a grant from instance ``i`` (the latest one wins: the channel is ordered)."""
        self.processed[i] = min(grant.processed, self.sent[i])
        self.limit[i] = grant.limit
        self.cost[i] = grant.cost
        self._last_grant[i] = self._clock()

    def short(self) -> bool:
        """Some instance left us under half its window: its receiver grants about now,
        and the sender should read the grant soon (a sender that reads grants only when
        it needs them: a spout's pump, runtime/spout.py)."""
        if self.unlimited:
            return False
        return any(
            2 * (limit - sent) < limit - processed
            for limit, sent, processed in zip(self.limit, self.sent, self.processed, strict=True)
        )

    def holds_back(self, i: int, waiting: int) -> bool:
        """True when a frame to ``i`` should wait for its next grant: it is low on credit
        (under half its window) with more than that waiting and messages in flight.

        A grant is then on its way (the receiver grants once we are below half our
        window), and sending now would cut the stream into ever smaller frames."""
        free = self.free(i)
        return free < waiting and free < self.window(i) // 2 and self.in_flight(i) > 0

    def choose(self, order: Sequence[int] | None = None, waiting: int = 1) -> int | None:
        """For shuffle: the least loaded instance that can take a frame now, or None.

        "Least loaded" is the least queued work, in seconds: in flight times the cost
        per message the instance last reported; one that never reported a cost counts
        as empty. Ties go to the fewest messages in flight, then to the first in
        ``order`` (the route's turn, ``Route.shuffle_order``; without one the ledger takes
        turns itself). Candidates have free credit and would not hold a frame of
        ``waiting`` messages back (:meth:`holds_back`).

        Not "most free credit": an instance whose window is small — restarted (back at
        the initial credit, measured cold) or after one slow measurement (descheduled
        on a loaded machine) — then had less room than its siblings for good, was hardly
        ever picked, so it hardly ever measured its speed again and stayed starved
        while they kept up. Least queued work picks it as soon as it is idle, and its
        next grants size its window from real work. As a last resort, an instance with
        free credit that was not picked for ``PROBE_INTERVAL`` gets the turn."""
        own = order is None
        if order is None:
            n = self.instances
            order = [(self._cursor + step) % n for step in range(n)]
        now = self._clock()
        last_chosen = self._last_chosen
        best: int | None = None
        best_key = (0.0, 0)
        for i in order:
            if self.free(i) <= 0 or self.holds_back(i, waiting):
                continue
            if now - last_chosen[i] >= PROBE_INTERVAL:
                best = i  # starved of turns: this one now
                break
            flying = self.in_flight(i)
            key = (flying * self.cost[i], flying)
            if best is None or key < best_key:
                best, best_key = i, key
        if best is not None:
            last_chosen[best] = now
            if own:
                self._cursor = (best + 1) % self.instances
        return best

    def probe_due(self, i: int) -> bool:
        """True when it is time to ask ``i`` again (then resets): it gave no credit, or
        holds messages of ours and either left us only the little a sender holds back
        for (waiting for a grant: see ``Outbox._send``) or has said nothing for
        ``PROBE_INTERVAL``.

        The last two matter after a receiver restarted: the grant the sender waits for
        died with it, and the messages it held stay counted in flight until a probe
        brings a new grant. With plenty of credit left, a shuffle may never pick that
        instance again (another always has more free credit), so silence alone must
        lead to a probe, or the restarted instance would idle for good."""
        if self.unlimited:
            return False
        free = self.free(i)
        if free > 0 and not self.in_flight(i):
            return False
        now = self._clock()
        if free > 0 and free >= self.window(i) // 2 and now - self._last_grant[i] < PROBE_INTERVAL:
            return False
        if now - self._last_probe[i] < PROBE_INTERVAL:
            return False
        self._last_probe[i] = now
        return True

    def total_in_flight(self) -> int:
        return sum(self.in_flight(i) for i in range(self.instances))

    def total_window(self) -> int:
        """Credit this sender holds in all (in flight + free): the edge's bound now."""
        if self.unlimited:
            return MAX_CREDIT
        return sum(max(0, self.limit[i] - self.processed[i]) for i in range(self.instances))


class CreditGrantor:
    """The receiver's side: measures its own speed and sizes what each sender may send.

    ``senders`` is how many upstream instances feed this instance; the window (the work
    it lets queue) is shared between them, each getting at least one message.
    """

    def __init__(
        self,
        senders: int,
        *,
        target: float = TARGET_QUEUE,
        max_credit: int = MAX_CREDIT,
    ) -> None:
        if senders < 1:
            raise ValueError(f"senders must be >= 1, got {senders}")
        if max_credit < 1:
            raise ValueError(f"max_credit must be >= 1, got {max_credit}")
        self.senders = senders
        self.target = target
        self.max_credit = max_credit
        #: Moving average of seconds of work per message (None until measured).
        self.cost: float | None = None

    def record(self, messages: int, seconds: float) -> None:
        """Processing ``messages`` took ``seconds`` of this instance's own work."""
        if messages <= 0:
            return
        per = max(0.0, seconds) / messages
        self.cost = per if self.cost is None else self.cost + _EWMA * (per - self.cost)

    def window(self) -> int:
        """Messages of work this instance lets queue, all senders together."""
        if self.cost is None:
            return min(self.max_credit, INITIAL_CREDIT * self.senders)
        if self.cost * self.max_credit <= self.target:
            return self.max_credit
        return max(1, int(self.target / self.cost))

    def share(self) -> int:
        """One sender's part of the window (at least one message)."""
        return max(1, self.window() // self.senders)

    def grant(self, processed: int) -> Grant:
        """The grant for a sender whose messages are processed up to ``processed``."""
        return Grant(processed, processed + self.share(), self.cost or 0.0)

"""The receiving side of flow control: cut a frame's work into slices, and grant.

A worker works through a frame in *slices* of about ``SLICE_SECONDS`` of its measured
work, and hands what each slice produced to its outbox before starting the next, so its
results go out within a few milliseconds while it still works on the rest of the frame.
After each slice it tells the frame's sender how far it got and how much more it accepts
(a :class:`~clusterduck.protocol.Grant`). No sockets here: the process loop reads the
frames (parsed by :func:`clusterduck.protocol.parse_frame`) and sends the grant frames
this object returns.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..protocol import grant_frame
from .credit import CreditGrantor

__all__ = ["GRANT_EVERY", "SLICE_SECONDS", "Intake"]

#: Work done between two hand-overs of results to the outbox (and two grants).
SLICE_SECONDS = 0.002
#: A sender that still holds more than half its share hears from us at most this often
#: (each grant wakes the sender: at 10,000 msgs/s one per message would cost it dearly).
GRANT_EVERY = 0.05


class Intake:
    """One worker instance's grantor, and what it last granted each sender."""

    def __init__(self, senders: int) -> None:
        self.grantor = CreditGrantor(senders)
        # identity: (limit, share, when) of the last grant sent to that sender
        self._last: dict[bytes, tuple[int, int, float]] = {}

    def slices(self, n: int) -> Iterator[tuple[int, int]]:
        """``(start, end)`` index ranges covering ``n`` messages, each about
        ``SLICE_SECONDS`` of work at the measured cost (re-read between slices). Before
        anything was measured (a restarted worker, whose senders may still hold the
        credit its predecessor granted) the first slice is one message: the next ones
        are sized by what it cost, and its result goes out at once."""
        start = 0
        while start < n:
            cost = self.grantor.cost
            size = 1 if cost is None else n if not cost else max(1, int(SLICE_SECONDS / cost))
            end = min(n, start + size)
            yield start, end
            start = end

    def grant_frame(
        self, identity: bytes, processed: int, total: int, now: float, force: bool = False
    ) -> bytes | None:
        """The grant for a sender whose messages are processed up to ``processed`` (a
        probe's total counts as processed: frames are read in order), or None when it is
        not needed yet: the sender, at ``total``, still holds over half its share and
        heard from us less than GRANT_EVERY ago.

        "Half" is of the share *last granted* to it, the same number the sender compares
        with when it holds a frame back for a grant (Outbox._send): once we processed all
        it sent, one of the two always acts, so they cannot wait for each other."""
        last = self._last.get(identity)
        if not force and last is not None:
            limit, share, when = last
            if limit - total > share // 2 and now - when < GRANT_EVERY:
                return None
        grant = self.grantor.grant(processed)
        self._last[identity] = (grant.limit, grant.limit - grant.processed, now)
        return grant_frame(grant)

    def early_grant(self, identity: bytes, processed: int, total: int, now: float) -> bytes | None:
        """The grant for a frame that just arrived, before its work (``processed`` is
        where the frame starts), or None: only when :meth:`grant_frame` would grant and
        the grant raises the sender's limit.

        A sender holds its next frame back once it holds under half its share, and the
        frame that took it there is the last we get; granted only after that frame's
        work, the next one would set out when we had nothing left to do, and a fast
        consumer would idle a round trip every half window."""
        last = self._last.get(identity)
        if self.grantor.cost is None or last is None:
            # Nothing measured yet: the share is a guess, and a large one would leave the
            # sender's count of our progress waiting for the next grant (a spout's
            # max_pending counts on it): grant after the work, as before.
            return None
        if processed + self.grantor.share() <= last[0]:
            return None
        return self.grant_frame(identity, processed, total, now)

    def cost_ms(self) -> float:
        return round((self.grantor.cost or 0.0) * 1000, 3)

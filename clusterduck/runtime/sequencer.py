"""Releases items strictly in sequence-id order, for sequential workers.

Reference §1: a sequential worker runs ``sequence_start``, then +1, +2 … whatever the arrival
order. Items that arrive early wait here. A missing id (a gap) blocks everything behind it
until one of:

* it arrives;
* ``gap_timeout`` expires: the timer starts when a later id is waiting while the cursor's
  id is missing, and restarts, for the next gap, from the moment that gap exists with
  something waiting behind it;
* more than ``max_pending`` items wait (the memory bound);
* end of stream (:meth:`Sequencer.finish`).

Skipping jumps the cursor to the lowest waiting id and counts the ids jumped over as
``gap_skipped``. Ids below the cursor are ``late_id`` and dropped; a second copy of an id
that is waiting is ``duplicate_id`` and dropped (a copy of an id already released is late).
The clock is injected so tests use a fake one and never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

from clusterduck.protocol import MAX_PENDING
from clusterduck.runtime.anomalies import DUPLICATE_ID, GAP_SKIPPED, LATE_ID, Anomalies

__all__ = ["Sequencer"]


class Sequencer:
    """Reorders ``(seq, item)`` pairs into strict id order; a pure object.

    The in-order case (``seq == cursor`` and nothing waiting) is a comparison and an
    increment; out-of-order items cost a dict insert and a heap push. The clock is only
    read when ``gap_timeout`` is set and a gap exists.
    """

    def __init__(
        self,
        start: int = 0,
        *,
        gap_timeout: float | None = None,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
        anomalies: Anomalies | None = None,
    ) -> None:
        if gap_timeout is not None and gap_timeout < 0:
            raise ValueError(f"gap_timeout must be >= 0 or None, got {gap_timeout}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        #: The next id expected.
        self.cursor = start
        self.gap_timeout = gap_timeout
        self.max_pending = max_pending
        self.anomalies = anomalies if anomalies is not None else Anomalies()
        self._clock = clock
        self._waiting: dict[int, Any] = {}
        self._heap: list[int] = []  # exactly the keys of _waiting
        self._gap_since: float | None = None  # when the current gap got something behind it

    def waiting(self) -> int:
        """Items held because an earlier id is missing."""
        return len(self._waiting)

    def holds(self, seq: int) -> bool:
        """Is this id waiting for an earlier one (at-least-once acks wait for it)?"""
        return seq in self._waiting

    def add(self, seq: int, item: Any) -> list[tuple[int, Any]]:
        """Accept one item; return the pairs now releasable, in id order.

        Every call also applies an expired ``gap_timeout``, so after ``add`` the deadline
        (if any) is in the future and the caller only needs :meth:`poll` when idle.
        """
        cursor = self.cursor
        if seq == cursor:
            if not self._waiting:
                self.cursor = cursor + 1
                return [(seq, item)]
            out: list[tuple[int, Any]] = [(seq, item)]
            self.cursor = cursor + 1
            self._release_run(out)
            self._restart_timer()
            self._expire(out)
            return out
        if seq < cursor:
            self.anomalies.count(
                LATE_ID, seq, f"id arrived after the cursor passed it (cursor {cursor}); dropped"
            )
            return self.poll()
        if seq in self._waiting:
            self.anomalies.count(DUPLICATE_ID, seq, "id already waiting; second copy dropped")
            return self.poll()
        self._waiting[seq] = item
        heappush(self._heap, seq)
        if self._gap_since is None and self.gap_timeout is not None:
            self._gap_since = self._clock()
        out = []
        while len(self._waiting) > self.max_pending:
            self._skip(out, f"more than max_pending={self.max_pending} ids waiting")
        self._expire(out)
        return out

    def next_deadline(self) -> float | None:
        """Clock time at which :meth:`poll` can skip the current gap; None if no timer runs."""
        if self._gap_since is None or self.gap_timeout is None:
            return None
        return self._gap_since + self.gap_timeout

    def poll(self) -> list[tuple[int, Any]]:
        """Release what an expired ``gap_timeout`` allows (else ``[]``)."""
        out: list[tuple[int, Any]] = []
        self._expire(out)
        return out

    def finish(self) -> list[tuple[int, Any]]:
        """End of stream: every waiting item in id order, skipping (and counting) the gaps."""
        out: list[tuple[int, Any]] = []
        while self._waiting:
            self._skip(out, "end of stream")
        self._gap_since = None
        return out

    # ------------------------------------------------------------------ internals

    def _release_run(self, out: list[tuple[int, Any]]) -> None:
        """Move the contiguous run starting at the cursor into ``out``."""
        waiting = self._waiting
        cursor = self.cursor
        while cursor in waiting:
            out.append((cursor, waiting.pop(cursor)))
            cursor += 1
        self.cursor = cursor
        heap = self._heap
        while heap and heap[0] < cursor:
            heappop(heap)

    def _restart_timer(self) -> None:
        """After the cursor moved: a new gap with something behind it starts its timer now."""
        if self.gap_timeout is None or not self._waiting:
            self._gap_since = None
        else:
            self._gap_since = self._clock()

    def _skip(self, out: list[tuple[int, Any]], reason: str) -> None:
        """Jump the cursor to the lowest waiting id and release the run from there."""
        lowest = self._heap[0]
        missing = lowest - self.cursor
        detail = (
            f"id {self.cursor} never arrived ({reason}); skipped"
            if missing == 1
            else f"ids {self.cursor}..{lowest - 1} never arrived ({reason}); skipped"
        )
        self.anomalies.count(GAP_SKIPPED, self.cursor, detail, n=missing)
        self.cursor = lowest
        self._release_run(out)
        self._restart_timer()

    def _expire(self, out: list[tuple[int, Any]]) -> None:
        """Skip gaps whose timer has run out (a loop, so ``gap_timeout=0`` never waits)."""
        while self._gap_since is not None and self._waiting:
            assert self.gap_timeout is not None
            if self._clock() < self._gap_since + self.gap_timeout:
                return
            self._skip(out, f"gap_timeout {self.gap_timeout:g}s expired")

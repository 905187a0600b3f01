"""Bundles the parts of one sequence id from every input of a bundled worker.

Reference §1: a bundled worker is called for id n once every input has delivered id n, with the
values in ``inputs`` order. Arrival order is arbitrary, so parts wait here. Memory is
bounded by ``max_pending`` incomplete bundles, and flow control (:meth:`Bundler.should_pause`)
lets the caller stop reading an input that runs far ahead so that lagging inputs catch up
before the bound is hit.

Memory choices (all bounded by ``max_pending``):

* incomplete bundles: at most ``max_pending``; one more evicts the lowest id
  (``bundle_overflow``);
* closed ids: the last ``max_pending`` ids that completed or were evicted are remembered
  (a dict plus a FIFO), so a late part for them is recognised: a part for a completed id is a
  ``duplicate_part``, a part for an evicted id is dropped and counted as ``bundle_overflow``
  again (its partners are gone; holding it would only waste memory). A duplicate arriving
  after more than ``max_pending`` further ids closed is no longer recognised and starts a
  new bundle, which can only complete if every input repeats that id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from heapq import heapify, heappop, heappush
from itertools import islice
from typing import Any

from clusterduck.protocol import MAX_PENDING
from clusterduck.runtime.anomalies import (
    BUNDLE_OVERFLOW,
    DUPLICATE_PART,
    INCOMPLETE_BUNDLE,
    Anomalies,
)

__all__ = ["Bundler"]

# Marks a slot whose part has not arrived yet (None is a legal value).
_MISSING: Any = object()

# Closed-id memory values.
_COMPLETED = True
_EVICTED = False


class Bundler:
    """Joins parts by sequence id; a pure object driven by the worker loop.

    A pending bundle is a list ``[v_0, …, v_{k-1}, missing]`` keyed by seq id, so
    :meth:`add` costs a few dict operations (plus a heap push when a bundle is created, which
    keeps eviction of the lowest id cheap).
    """

    def __init__(
        self,
        inputs: Sequence[str],
        *,
        max_pending: int = MAX_PENDING,
        anomalies: Anomalies | None = None,
    ) -> None:
        names = tuple(inputs)
        if not names:
            raise ValueError("a Bundler needs at least one input")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate input names in {list(names)}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.inputs = names
        self.max_pending = max_pending
        self.anomalies = anomalies if anomalies is not None else Anomalies()
        self._k = len(names)
        self._index = {name: i for i, name in enumerate(names)}
        self._pending: dict[int, list[Any]] = {}
        self._heap: list[int] = []  # seq ids of pending bundles; stale entries skipped lazily
        self._closed: dict[int, bool] = {}
        self._closed_order: deque[int] = deque()
        # Flow control: parts held per input, and how many inputs are at the threshold.
        self._held = [0] * self._k
        self._threshold = max(1, max_pending // self._k)
        self._n_over = 0

    # ------------------------------------------------------------------ hot path

    def add(self, input_name: str, seq: int, value: Any) -> tuple[Any, ...] | None:
        """Store one part; return the values in ``inputs`` order once id ``seq`` is complete."""
        try:
            i = self._index[input_name]
        except KeyError:
            raise ValueError(
                f"seq {seq}: part from unknown input {input_name!r}; "
                f"this bundle joins {list(self.inputs)}"
            ) from None
        entry = self._pending.get(seq)
        if entry is None:
            closed = self._closed.get(seq)
            if closed is not None:
                self._late_part(input_name, seq, closed)
                return None
            if self._k == 1:
                self._remember(seq, _COMPLETED)
                return (value,)
            entry = [_MISSING] * self._k
            entry[i] = value
            entry.append(self._k - 1)
            self._pending[seq] = entry
            self._push(seq)
            self._hold(i)
            if len(self._pending) > self.max_pending:
                self._evict_lowest()
            return None
        if entry[i] is not _MISSING:
            self.anomalies.count(
                DUPLICATE_PART, seq, f"second part from input {input_name!r} dropped, first kept"
            )
            return None
        missing = entry[-1]
        if missing > 1:
            entry[i] = value
            entry[-1] = missing - 1
            self._hold(i)
            return None
        # Last part: the bundle completes; every other input's part stops waiting.
        del self._pending[seq]
        entry[i] = value
        entry.pop()
        for j in range(self._k):
            if j != i:
                self._release(j)
        self._remember(seq, _COMPLETED)
        return tuple(entry)

    # ------------------------------------------------------------------ queries

    def holds(self, seq: int) -> bool:
        """Is an incomplete bundle with this id held (at-least-once acks wait for it)?"""
        return seq in self._pending

    def pending(self) -> int:
        """Incomplete bundles currently held."""
        return len(self._pending)

    def lowest(self) -> int | None:
        """The lowest id of an incomplete bundle (``status``: which id a stalled worker
        waits for); drops the heap's stale entries on the way, so it stays cheap."""
        heap, pending = self._heap, self._pending
        while heap and heap[0] not in pending:
            heappop(heap)
        return heap[0] if heap else None

    def passed(self, seq: int, recent: int = 64) -> bool:
        """Did a later id than ``seq`` complete (or get evicted) among the ``recent``
        most recently closed? Then later ids got past incomplete bundle ``seq``. Bounded
        work, asked twice a second (runtime/stall.py), never per message."""
        return any(closed > seq for closed in islice(reversed(self._closed_order), recent))

    def missing(self, seq: int) -> tuple[str, ...]:
        """The inputs whose part of incomplete bundle ``seq`` has not come (``()`` if
        no bundle with that id is held)."""
        entry = self._pending.get(seq)
        if entry is None:
            return ()
        return tuple(n for n, v in zip(self.inputs, entry, strict=False) if v is _MISSING)

    def held(self, input_name: str) -> int:
        """Parts from ``input_name`` that are waiting for other inputs."""
        return self._held[self._index[input_name]]

    def should_pause(self, input_name: str) -> bool:
        """Whether the caller should stop reading ``input_name`` for now.

        True when that input holds at least ``max_pending // len(inputs)`` waiting parts,
        so lagging inputs can catch up. Never True for every input at once: if all inputs
        are over the threshold nobody could progress, so all may read, and the memory bound
        is then kept by evicting the lowest incomplete id (``bundle_overflow``).
        """
        return self._held[self._index[input_name]] >= self._threshold and self._n_over < self._k

    # ------------------------------------------------------------------ end of stream

    def finish(self) -> int:
        """End of stream: drop every incomplete bundle (``incomplete_bundle``); return how many."""
        dropped = 0
        for seq in sorted(self._pending):
            entry = self._pending[seq]
            self.anomalies.count(INCOMPLETE_BUNDLE, seq, self._describe(entry))
            dropped += 1
        self._pending.clear()
        self._heap.clear()
        self._held = [0] * self._k
        self._n_over = 0
        return dropped

    # ------------------------------------------------------------------ internals

    def _hold(self, i: int) -> None:
        held = self._held[i] + 1
        self._held[i] = held
        if held == self._threshold:
            self._n_over += 1

    def _release(self, i: int) -> None:
        held = self._held[i]
        if held == self._threshold:
            self._n_over -= 1
        self._held[i] = held - 1

    def _push(self, seq: int) -> None:
        heap = self._heap
        heappush(heap, seq)
        # Completed bundles leave stale heap entries; compact so the heap stays O(pending).
        if len(heap) > 2 * len(self._pending) + 64:
            self._heap = list(self._pending)
            heapify(self._heap)

    def _remember(self, seq: int, how: bool) -> None:
        self._closed[seq] = how
        order = self._closed_order
        order.append(seq)
        if len(order) > self.max_pending:
            del self._closed[order.popleft()]

    def _evict_lowest(self) -> None:
        heap = self._heap
        while True:
            seq = heappop(heap)
            entry = self._pending.pop(seq, None)
            if entry is not None:
                break
        for j in range(self._k):
            if entry[j] is not _MISSING:
                self._release(j)
        self._remember(seq, _EVICTED)
        self.anomalies.count(
            BUNDLE_OVERFLOW,
            seq,
            f"more than max_pending={self.max_pending} incomplete bundles; lowest id evicted, "
            + self._describe(entry),
        )

    def _late_part(self, input_name: str, seq: int, closed: bool) -> None:
        if closed:
            self.anomalies.count(
                DUPLICATE_PART, seq, f"part from input {input_name!r} for an already emitted id"
            )
        else:
            self.anomalies.count(
                BUNDLE_OVERFLOW,
                seq,
                f"late part from input {input_name!r} for a bundle already evicted; dropped",
            )

    def _describe(self, entry: list[Any]) -> str:
        have = [n for n, v in zip(self.inputs, entry, strict=False) if v is not _MISSING]
        lack = [n for n, v in zip(self.inputs, entry, strict=False) if v is _MISSING]
        return f"had {have}, missing {lack}"

"""A spout's pending window under at-least-once: batches kept until the DAG is done.

Every batch the spout hands to its outbox becomes a *root* (runtime/ledger.py) that keeps
its ``(seq, value)`` pairs, the XOR of its tree and a deadline (``message_timeout``).
A root is done when it is *sealed* (all of its messages were framed) and its XOR is 0.
A root is replayed — its values dispatched again with the same seq ids, under a new
root, so that late acks of the old tree cannot corrupt the new one — when its deadline
passes or when a process on the path restarted (:meth:`replay_all`). Pure object with an
injected clock; the process loop does the I/O.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from .ledger import ROOT_BITS

__all__ = ["PendingWindow", "Root"]

Batch = list[tuple[int, Any]]


@dataclass
class Root:
    batch: Batch
    deadline: float
    xor: int = 0
    sealed: bool = False


class PendingWindow:
    def __init__(
        self, slot: int, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slot = slot
        self.timeout = timeout
        self.clock = clock
        # A new incarnation starts its counter at random: acks for the roots of a
        # crashed predecessor then name roots this one never made.
        self._next = random.getrandbits(ROOT_BITS - 2)
        self._roots: OrderedDict[int, Root] = OrderedDict()  # oldest deadline first
        self._unsealed: list[int] = []
        self.messages = 0  # values kept
        self.acked = 0
        self.replayed = 0

    def open(self, batch: Batch) -> int:
        """A new root for ``batch``; returns its id."""
        self._next = (self._next + 1) % (1 << ROOT_BITS)
        root = self.slot << ROOT_BITS | self._next
        self._roots[root] = Root(batch, self.clock() + self.timeout)
        self._unsealed.append(root)
        self.messages += len(batch)
        return root

    def born(self, root: int, edge: int) -> None:
        entry = self._roots.get(root)
        if entry is not None:
            entry.xor ^= edge

    def seal(self, framing: Container[int] = ()) -> Batch:
        """Every open root not in ``framing`` (messages still waiting to be framed) was
        framed completely; returns what that completed."""
        done: Batch = []
        unsealed, self._unsealed = self._unsealed, []
        for root in unsealed:
            if root in framing:
                self._unsealed.append(root)
                continue
            entry = self._roots.get(root)
            if entry is not None and not entry.sealed:
                entry.sealed = True
                if entry.xor == 0:
                    done.extend(self._complete(root))
        return done

    def ack(self, root: int, xor: int) -> Batch:
        """Apply one XOR; returns the messages this completed (empty mostly). Acks for
        roots not kept here (done, replayed, or a predecessor's) are ignored."""
        entry = self._roots.get(root)
        if entry is None:
            return []
        entry.xor ^= xor
        if entry.xor == 0 and entry.sealed:
            return self._complete(root)
        return []

    def expired(self) -> list[Batch]:
        """Batches whose deadline passed, removed from the window (to dispatch again)."""
        now = self.clock()
        out = []
        while self._roots:
            root, entry = next(iter(self._roots.items()))
            if entry.deadline > now:
                break
            out.append(self._drop(root))
        return out

    def replay_all(self) -> list[Batch]:
        """Every batch still pending (a process on the path restarted)."""
        return [self._drop(root) for root in list(self._roots)]

    def next_deadline(self) -> float | None:
        for entry in self._roots.values():
            return entry.deadline
        return None

    def done_below(self, dispatched_next: int) -> int:
        """The highest id below which everything dispatched is done, for a spout whose
        ids grow (what a restarted spout resumes from)."""
        low = dispatched_next
        for entry in self._roots.values():
            for seq, _ in entry.batch:
                if seq < low:
                    low = seq
        return low

    def __len__(self) -> int:
        return len(self._roots)

    def _complete(self, root: int) -> Batch:
        entry = self._roots.pop(root)
        self.messages -= len(entry.batch)
        self.acked += len(entry.batch)
        return entry.batch

    def _drop(self, root: int) -> Batch:
        entry = self._roots.pop(root)
        self.messages -= len(entry.batch)
        return entry.batch

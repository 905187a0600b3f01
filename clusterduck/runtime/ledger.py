"""The acknowledgement ledger of at-least-once: who still owes what to which spout.

Storm tracks each spout tuple's tree with one XOR per tuple: every edge of the tree gets
a random 64-bit id, XORed in when the edge is born and again when it is consumed, and the
tree is done when its XOR is 0. Doing that per message costs a random number, a dict
update and 16 bytes per message at every hop. Here the unit is the **frame** (up to
MAX_BATCH messages sent at once on one edge) and the root is a **spout batch**:

* a spout batch gets a *root* id (runtime/pending.py keeps its values);
* every data frame gets a random *edge id* and carries its roots (the roots of the
  batches its messages came from) in an extra frame part (``protocol.pack_anchor``);
* a worker XORs a frame's edge id into each of its roots once every message of the
  frame has left it (called, dropped, or — bundled/sequential — released), and XORs in
  the edge ids of the frames it sent with the outputs; it sends the XORs back towards
  the spouts (hop by hop, on the data connections the frames came in on: each worker
  merges what its receivers send into its own XORs) only when nothing it produced is
  still waiting for credit, so an edge is always born no later than the ack that
  consumes its parent;
* a sequential worker also waits until the ids are *durable* (cursor saved, or below
  ``committed()``), so that a restart never waits for an id that will not come again.

A frame's roots may over-approximate (a worker that mixes two batches anchors its
outputs to both): an edge is born and consumed under the same roots, so the XOR of every
root still reaches 0, only later. Pure object, no sockets: the process loop feeds it.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import OrderedDict
from collections.abc import Iterable

__all__ = [
    "ROOT_BITS",
    "AckTracker",
    "FrameToken",
    "new_edge_id",
    "spout_of",
]

#: A root id is ``spout_slot << ROOT_BITS | counter``: the slot says which spout instance
#: keeps the batch, so a worker knows where to send the XOR.
ROOT_BITS = 40


def spout_of(root: int) -> int:
    return root >> ROOT_BITS


def new_edge_id() -> int:
    return random.getrandbits(62) | 1


class FrameToken:
    """One received frame: its edge id, roots and how many of its messages are left."""

    __slots__ = ("edge", "left", "roots")

    def __init__(self, edge: int, roots: tuple[int, ...], left: int) -> None:
        self.edge = edge
        self.roots = roots
        self.left = left


class AckTracker:
    """A worker's side of the ledger: frames in, frames out, XORs per root to send."""

    def __init__(self, *, holds: bool = False, gated: bool = False) -> None:
        self.holds = holds  # bundled / sequential: messages wait inside the worker
        self.gated = gated  # sequential: acks wait until the ids are durable
        self._acc: dict[int, int] = {}
        self._held: dict[int, list[FrameToken]] = {}
        # When each held id was first held, oldest first (bundle parts waiting for a
        # partner that may never come: see expire_held)
        self._since: OrderedDict[int, float] = OrderedDict()
        # (top seq, tie, tokens, messages each): released when every id up to top is
        # durable; the per-id path puts one message per token, hold_below a whole slice
        self._gate: list[tuple[int, int, list[FrameToken], int]] = []
        self._tie = 0

    # -- frames in -----------------------------------------------------------------

    def receive(self, edge: int, roots: tuple[int, ...], n: int) -> FrameToken:
        token = FrameToken(edge, roots, n)
        if n == 0:
            self._consume(token)
        return token

    def processed(self, token: FrameToken, n: int) -> None:
        """``n`` messages of a plain worker's frame were called (whatever they returned)."""
        token.left -= n
        if token.left <= 0:
            self._consume(token)

    def hold(self, token: FrameToken, seqs: Iterable[int]) -> None:
        """These messages of ``token`` now wait inside a bundled/sequential worker."""
        held = self._held
        since = self._since
        now = time.monotonic()
        for seq in seqs:
            bucket = held.get(seq)
            if bucket is None:
                held[seq] = [token]
                since[seq] = now
            else:
                bucket.append(token)

    def expire_held(self, older_than: float) -> list[int]:
        """Held ids first held before ``older_than`` (to give up on: release them)."""
        since, held = self._since, self._held
        out = []
        while since:
            seq, when = next(iter(since.items()))
            if when >= older_than:
                break
            since.popitem(last=False)
            if seq in held:
                out.append(seq)
        return out

    def hold_below(self, token: FrameToken, top: int, n: int) -> None:
        """``n`` messages of ``token``, ids up to ``top``, entered a sequential (not
        bundled) worker: they have all left it once its cursor passed ``top`` (called,
        dropped as late, or skipped), and are acknowledged once that is durable. One
        heap entry per slice instead of bookkeeping per message."""
        self._tie += 1
        heapq.heappush(self._gate, (top, self._tie, [token], n))

    def roots_waiting(self, cursor: int) -> tuple[int, ...]:
        """The roots of hold_below slices with ids not all below ``cursor`` (the outputs
        of a sequential worker's step come from these: anchor them to all)."""
        found: set[int] = set()
        for top, _, tokens, _ in self._gate:
            if top >= cursor:
                for token in tokens:
                    found.update(token.roots)
        return tuple(found)

    def roots_of(self, seqs: Iterable[int]) -> tuple[int, ...]:
        """The roots of the held messages with these ids (to anchor their outputs)."""
        found: set[int] = set()
        for seq in seqs:
            for token in self._held.get(seq, ()):
                found.update(token.roots)
        return tuple(found)

    def release(self, seqs: Iterable[int]) -> None:
        """These ids left the worker (called or dropped); gated ones wait for durability."""
        since = self._since
        if not self.gated:
            for seq in seqs:
                tokens = self._held.pop(seq, None)
                if tokens:
                    since.pop(seq, None)
                    self._done(tokens)
            return
        # One gate entry per call, under its highest id: a heap push per message would
        # cost more than the acks save (a sequential sink releases thousands per slice).
        top, group = -1, []
        for seq in seqs:
            tokens = self._held.pop(seq, None)
            if tokens:
                since.pop(seq, None)
                group.extend(tokens)
                top = max(top, seq)
        if group:
            self._tie += 1
            heapq.heappush(self._gate, (top, self._tie, group, 1))

    def durable(self, below: int) -> None:
        """Every id below ``below`` is durable (saved cursor, or committed()+1)."""
        gate = self._gate
        while gate and gate[0][0] < below:
            _, _, tokens, each = heapq.heappop(gate)
            self._done(tokens, each)

    def held(self) -> int:
        return len(self._held) + len(self._gate)

    # -- frames out ----------------------------------------------------------------

    def born(self, edge: int, roots: Iterable[int]) -> None:
        acc = self._acc
        for root in roots:
            acc[root] = acc.get(root, 0) ^ edge

    def merge(self, pairs: Iterable[tuple[int, int]]) -> None:
        """XORs a receiver of ours sent back: they travel on with ours."""
        acc = self._acc
        for root, xor in pairs:
            acc[root] = acc.get(root, 0) ^ xor

    def owes(self) -> bool:
        """Are there XORs to send?"""
        return bool(self._acc)

    def take(self) -> dict[int, dict[int, int]]:
        """The XORs gathered since the last call, per spout slot: ``{slot: {root: xor}}``."""
        if not self._acc:
            return {}
        out: dict[int, dict[int, int]] = {}
        for root, xor in self._acc.items():
            if xor:
                out.setdefault(spout_of(root), {})[root] = xor
        self._acc = {}
        return out

    # -- inside ------------------------------------------------------------------------

    def _done(self, tokens: list[FrameToken], each: int = 1) -> None:
        for token in tokens:
            token.left -= each
            if token.left <= 0:
                self._consume(token)

    def _consume(self, token: FrameToken) -> None:
        acc = self._acc
        for root in token.roots:
            acc[root] = acc.get(root, 0) ^ token.edge

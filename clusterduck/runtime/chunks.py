"""Messages waiting in an outbox, kept as the column chunks they were emitted in.

A worker's results and a decoded frame are two columns, ids and values (runtime/codec.py,
docs/reference.md "Frames"); the outbox queues them as they are and cuts frames out of
them with slices, so a message that goes straight through a worker never becomes a
``(seq, value)`` pair or a queue entry of its own: the per-message work stays in C. Ids
stay a ``range`` while they are consecutive, so the frame that carries them only needs
the first. Pure, tested with hypothesis in ``tests/test_chunks.py``.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Sequence
from itertools import chain
from typing import Any

from ..protocol import Batch, Columns

__all__ = ["ChunkQueue"]

_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


class ChunkQueue:
    """A FIFO of messages stored as ``[ids, values, start]`` chunks (``start``: how much
    of the chunk already left, so taking a few messages at a time never copies the rest)."""

    __slots__ = ("_chunks", "_len")

    def __init__(self) -> None:
        self._chunks: deque[list[Any]] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def extend_columns(self, seqs: Sequence[int], values: list[Any]) -> None:
        """Queue messages given as their ids and values (``len(seqs) == len(values)``)."""
        if values:
            self._chunks.append([seqs, values, 0])
            self._len += len(values)

    def extend(self, batch: Batch) -> None:
        """Queue ``(seq, value)`` pairs."""
        if batch:
            self.extend_columns(list(map(_first, batch)), list(map(_second, batch)))

    def take(self, n: int) -> Columns:
        """The first ``n`` messages (``0 < n <= len(self)``), taken off the queue."""
        if not 0 < n <= self._len:
            raise ValueError(f"cannot take {n} of {self._len} messages")
        self._len -= n
        chunks = self._chunks
        chunk = chunks[0]
        seqs, values, start = chunk
        left = len(values) - start
        if left > n:
            chunk[2] = start + n
            return seqs[start : start + n], values[start : start + n]
        chunks.popleft()
        if start:
            seqs, values = seqs[start:], values[start:]
        if left == n:
            return seqs, values
        ids: list[Sequence[int]] = [seqs]
        parts: list[list[Any]] = [values]
        need = n - left
        while need:
            chunk = chunks[0]
            seqs, values, start = chunk
            left = len(values) - start
            if left > need:
                chunk[2] = start + need
                ids.append(seqs[start : start + need])
                parts.append(values[start : start + need])
                break
            chunks.popleft()
            ids.append(seqs[start:] if start else seqs)
            parts.append(values[start:] if start else values)
            need -= left
        return _join(ids), list(chain.from_iterable(parts))

    def put_back(self, seqs: Sequence[int], values: list[Any]) -> None:
        """Return what :meth:`take` gave, in front of everything (a send that failed)."""
        if values:
            self._chunks.appendleft([seqs, values, 0])
            self._len += len(values)

    def clear(self) -> None:
        self._chunks.clear()
        self._len = 0

    def pairs(self) -> Batch:
        """Everything queued as ``(seq, value)`` pairs, oldest first (for tests, status)."""
        return [
            pair
            for seqs, values, start in self._chunks
            for pair in zip(seqs[start:], values[start:], strict=True)
        ]


def _join(ids: list[Sequence[int]]) -> Sequence[int]:
    """Ids of consecutive chunks as one sequence: a range while they stay consecutive."""
    if (
        all(type(r) is range and r.step == 1 for r in ids)
        and all(
            a.stop == b.start  # type: ignore[attr-defined]
            for a, b in zip(ids, ids[1:], strict=False)
        )
    ):
        return range(ids[0].start, ids[-1].stop)  # type: ignore[attr-defined]
    return list(chain.from_iterable(ids))

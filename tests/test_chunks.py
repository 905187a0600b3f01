"""The outbox's queue of column chunks: a FIFO whatever the chunk and take sizes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.runtime.chunks import ChunkQueue

# Operations: ("cols", first id, n, consecutive?) queues n messages as columns, ("pairs",
# first, n) as pairs, ("take", k) takes up to k, ("back", k) takes k and puts them back.
ops = st.lists(
    st.one_of(
        st.tuples(st.just("cols"), st.integers(0, 50), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("pairs"), st.integers(0, 50), st.integers(0, 7)),
        st.tuples(st.just("take"), st.integers(1, 12)),
        st.tuples(st.just("back"), st.integers(1, 12)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_a_chunk_queue_is_a_fifo_of_messages(operations: list[tuple[Any, ...]]) -> None:
    q, model = ChunkQueue(), []  # the model: a plain list of pairs
    label = 0
    for op in operations:
        if op[0] in ("cols", "pairs"):
            first, n = op[1], op[2]
            ids: Any = range(first, first + n)
            if op[0] == "cols" and not op[3]:
                ids = [first + 2 * i for i in range(n)]
            values = [f"v{label + i}" for i in range(n)]
            label += n
            if op[0] == "cols":
                q.extend_columns(ids, values)
            else:
                q.extend(list(zip(ids, values, strict=True)))
            model.extend(zip(ids, values, strict=True))
        elif model:
            k = min(op[1], len(model))
            seqs, values = q.take(k)
            assert list(zip(seqs, values, strict=True)) == model[:k]
            # consecutive ids stay a range across chunks only if every part was one
            if isinstance(seqs, range):
                assert seqs.step == 1 and list(seqs) == [s for s, _ in model[:k]]
            if op[0] == "back":
                q.put_back(seqs, values)
            else:
                del model[:k]
        assert len(q) == len(model)
        assert q.pairs() == model


def test_consecutive_chunks_join_into_one_range() -> None:
    q = ChunkQueue()
    q.extend_columns(range(0, 3), ["a", "b", "c"])
    q.extend_columns(range(3, 5), ["d", "e"])
    q.extend_columns([9], ["f"])
    assert q.take(4) == (range(0, 4), ["a", "b", "c", "d"])
    assert q.take(2) == ([4, 9], ["e", "f"])
    assert len(q) == 0
    with pytest.raises(ValueError, match="cannot take 1 of 0"):
        q.take(1)

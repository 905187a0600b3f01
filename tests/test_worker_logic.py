"""WorkerLogic's hot path (``feed_columns``: the user's function mapped over a decoded
frame's columns) against the plain per-message loop (``feed``): the same outputs, the same
errors counted, and ``context().seq_id`` right inside every call and generator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.exceptions import FatalError
from clusterduck.protocol import ComponentSpec
from clusterduck.runtime.component import WorkerLogic
from clusterduck.runtime.context import InstanceContext, context, set_context

KINDS = ("value", "none", "raise", "stop", "gen", "gen_raises")


class Behaviour:
    """A user function whose result each message's value decides; it records the seq id
    ``context()`` gives in each call (and inside generators)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None, Any]] = []

    def __call__(self, value: tuple[str, int]) -> Any:
        kind, n = value
        self.seen.append(("call", context().seq_id, value))
        if kind == "none":
            return None
        if kind == "raise":
            raise ValueError(f"bad {n}")
        if kind == "stop":
            raise StopIteration(n)
        if kind in ("gen", "gen_raises"):
            return self._gen(kind, n)
        return (kind, n)

    def _gen(self, kind: str, n: int) -> Iterator[Any]:
        for i in range(n):
            self.seen.append(("gen", context().seq_id, i))
            yield i
        if kind == "gen_raises":
            raise KeyError(n)


def pairs(columns: tuple[Any, list[Any]]) -> list[tuple[int, Any]]:
    return list(zip(*columns, strict=True))


def logic(call: Any, on_error: str = "skip") -> WorkerLogic:
    spec = ComponentSpec(name="w", kind="worker", entry="m:f", inputs=("src",), on_error=on_error)
    return WorkerLogic(spec, call)


@pytest.fixture(autouse=True)
def _context() -> Iterator[None]:
    set_context(InstanceContext("t", "w", 0, 1, "localhost"))
    yield
    set_context(None)


messages = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 3)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(messages, st.integers(0, 2**40), st.booleans())
def test_feed_columns_gives_what_the_per_message_loop_gives(
    values: list[tuple[str, int]], first: int, consecutive: bool
) -> None:
    seqs: Any = (
        range(first, first + len(values))
        if consecutive
        else [first + 3 * i for i in range(len(values))]
    )
    plain, mapped = Behaviour(), Behaviour()
    a, b = logic(plain), logic(mapped)
    out_plain = a.feed("src", list(zip(seqs, values, strict=True)))
    out_mapped = pairs(b.feed_columns("src", seqs, list(values)))
    assert out_mapped == out_plain
    assert (b.metrics.received, b.metrics.emitted, b.metrics.errors) == (
        a.metrics.received,
        a.metrics.emitted,
        a.metrics.errors,
    )
    assert b.metrics.errors == sum(k in ("raise", "stop", "gen_raises") for k, _ in values)
    # Every call saw its own id; generators are consumed after the calls of the slice,
    # each still under its own id.
    calls = [(seq, value) for kind, seq, value in mapped.seen if kind == "call"]
    assert calls == list(zip(seqs, values, strict=True))
    assert sorted(e for e in mapped.seen if e[0] == "gen") == sorted(
        e for e in plain.seen if e[0] == "gen"
    )


def test_a_stopiteration_from_the_function_is_an_error_not_the_end_of_the_slice() -> None:
    w = Behaviour()
    lg = logic(w)
    out = pairs(
        lg.feed_columns(
            "src", range(10, 14), [("value", 1), ("stop", 2), ("value", 3), ("none", 4)]
        )
    )
    assert out == [(10, ("value", 1)), (12, ("value", 3))]
    assert lg.metrics.errors == 1 and "seq 11" in (lg.metrics.last_error or "")


def test_on_error_stop_ends_at_the_failing_message() -> None:
    w = Behaviour()
    lg = logic(w, on_error="stop")
    with pytest.raises(FatalError, match="seq 6"):
        lg.feed_columns("src", [5, 6, 7], [("value", 1), ("raise", 2), ("value", 3)])
    assert [seq for _, seq, _ in w.seen] == [5, 6]  # nothing called after it


def test_results_keep_their_ids_and_none_is_dropped() -> None:
    lg = logic(lambda v: v)
    ids = range(3)
    assert lg.feed_columns("src", ids, ["a", "b", "c"]) == (ids, ["a", "b", "c"])  # as they came
    assert lg.feed_columns("src", [9, 4, 7], ["a", None, "c"]) == ([9, 7], ["a", "c"])
    sink = logic(lambda v: None)
    assert sink.feed_columns("src", range(3), ["a", "b", "c"]) == ([], [])
    assert sink.metrics.received == 3 and sink.metrics.emitted == 0


class RaisingEq:
    """Compares like a numpy array: ``==`` gives something whose truth value raises."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = object.__hash__


class EqualToAnything:
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


@pytest.mark.parametrize("kind", [RaisingEq, EqualToAnything])
def test_a_filter_forwards_results_that_compare_oddly_with_none(kind: type) -> None:
    # The sink check must find None by identity: a result's own __eq__ must neither
    # raise out of the worker nor make a filter's slice look like a sink's.
    kept = kind()
    lg = logic(lambda v: None if v == 0 else kept)
    assert lg.feed_columns("src", [10, 11, 12], [0, 1, 0]) == ([11], [kept])

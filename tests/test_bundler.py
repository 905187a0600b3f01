"""Bundler (and the shared Anomalies counter): unit tests and arrival-order properties."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.runtime.anomalies import (
    BUNDLE_OVERFLOW,
    DUPLICATE_PART,
    INCOMPLETE_BUNDLE,
    LATE_ID,
    LOG_EVERY,
    LOG_FIRST,
    Anomalies,
)
from clusterduck.runtime.bundler import _MISSING, Bundler

# ---------------------------------------------------------------------- Anomalies


def test_anomalies_count_and_total() -> None:
    a = Anomalies()
    a.count(LATE_ID, 3)
    a.count(LATE_ID, 4, "why")
    a.count(DUPLICATE_PART, 5, n=7)
    assert a.as_dict() == {LATE_ID: 2, DUPLICATE_PART: 7}
    assert a.total() == 9
    assert a.get(BUNDLE_OVERFLOW) == 0
    snapshot = a.as_dict()
    snapshot[LATE_ID] = 100
    assert a.get(LATE_ID) == 2  # as_dict is a copy


def test_anomalies_logging_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    a = Anomalies(label="join[0]")
    with caplog.at_level(logging.WARNING, logger="clusterduck.runtime"):
        for seq in range(1, 3 * LOG_EVERY + 1):
            a.count(DUPLICATE_PART, seq, "second part dropped")
        a.count(LATE_ID, 99, "too late")
    dup_lines = [r.getMessage() for r in caplog.records if DUPLICATE_PART in r.getMessage()]
    assert len(dup_lines) == LOG_FIRST + 3  # first 20, then the 1000th, 2000th, 3000th
    assert dup_lines[0].startswith("join[0]: duplicate_part at seq 1 - second part dropped")
    assert "every 1000th" in dup_lines[LOG_FIRST - 1]
    assert "at seq 1000 " in dup_lines[LOG_FIRST] and "1000th occurrence" in dup_lines[LOG_FIRST]
    late = [r.getMessage() for r in caplog.records if LATE_ID in r.getMessage()]
    assert len(late) == 1 and "seq 99" in late[0]  # budgets are per kind
    assert a.get(DUPLICATE_PART) == 3 * LOG_EVERY


# ---------------------------------------------------------------------- unit tests


def test_bundle_completes_in_inputs_order_whatever_the_arrival_order() -> None:
    b = Bundler(["a", "b", "c"])
    assert b.add("c", 7, "c7") is None
    assert b.add("a", 7, "a7") is None
    assert b.pending() == 1 and b.held("a") == 1 and b.held("b") == 0
    assert b.add("b", 7, "b7") == ("a7", "b7", "c7")
    assert b.pending() == 0 and b.held("a") == b.held("c") == 0
    assert b.anomalies.total() == 0


def test_none_is_a_value() -> None:
    b = Bundler(["a", "b"])
    assert b.add("a", 0, None) is None
    assert b.add("b", 0, None) == (None, None)


def test_single_input_bundles_immediately() -> None:
    b = Bundler(["only"])
    assert b.add("only", 3, "x") == ("x",)
    assert b.add("only", 3, "y") is None
    assert b.anomalies.as_dict() == {DUPLICATE_PART: 1}
    assert b.pending() == 0 and not b.should_pause("only")


def test_duplicate_part_keeps_first() -> None:
    b = Bundler(["a", "b"])
    b.add("a", 1, "first")
    assert b.add("a", 1, "second") is None
    assert b.held("a") == 1
    assert b.add("b", 1, "b") == ("first", "b")
    assert b.anomalies.as_dict() == {DUPLICATE_PART: 1}


def test_part_for_completed_id_is_a_duplicate() -> None:
    b = Bundler(["a", "b"])
    b.add("a", 1, 1)
    assert b.add("b", 1, 1) == (1, 1)
    assert b.add("a", 1, 2) is None
    assert b.pending() == 0  # not held again
    assert b.anomalies.as_dict() == {DUPLICATE_PART: 1}


def test_completed_memory_is_bounded() -> None:
    b = Bundler(["x"], max_pending=3)
    for seq in range(10):
        b.add("x", seq, seq)
    assert len(b._closed) == 3 and len(b._closed_order) == 3
    assert b.add("x", 0, "again") == ("again",)  # forgotten: documented limitation
    assert b.add("x", 9, "again") is None  # still remembered


def test_unknown_input_is_a_clear_error() -> None:
    b = Bundler(["a", "b"])
    with pytest.raises(ValueError, match="unknown input 'zz'.*seq 4|seq 4.*unknown input 'zz'"):
        b.add("zz", 4, None)


@pytest.mark.parametrize(("inputs", "max_pending"), [([], 10), (["a", "a"], 10), (["a"], 0)])
def test_bad_construction(inputs: list[str], max_pending: int) -> None:
    with pytest.raises(ValueError):
        Bundler(inputs, max_pending=max_pending)


def test_finish_drops_incomplete(caplog: pytest.LogCaptureFixture) -> None:
    b = Bundler(["a", "b"])
    b.add("a", 5, 1)
    b.add("b", 2, 1)
    b.add("a", 3, 1)
    b.add("b", 3, 1)
    with caplog.at_level(logging.WARNING, logger="clusterduck.runtime"):
        assert b.finish() == 2
    assert b.anomalies.as_dict() == {INCOMPLETE_BUNDLE: 2}
    messages = [r.getMessage() for r in caplog.records]
    assert "seq 2" in messages[0] and "missing ['a']" in messages[0]
    assert "seq 5" in messages[1] and "missing ['b']" in messages[1]
    assert b.pending() == 0 and b.held("a") == 0 and b.held("b") == 0
    assert b.finish() == 0


def test_pause_hint_for_an_input_running_ahead() -> None:
    b = Bundler(["a", "b"], max_pending=10)  # threshold 5 per input
    for seq in range(4):
        b.add("a", seq, seq)
    assert not b.should_pause("a")
    b.add("a", 4, 4)
    assert b.should_pause("a") and not b.should_pause("b")
    b.add("b", 0, 0)
    assert not b.should_pause("a")


def test_all_paused_is_never_reported_and_overflow_evicts_lowest() -> None:
    b = Bundler(["a", "b"], max_pending=4)  # threshold 2
    b.add("a", 0, "a0")
    b.add("a", 1, "a1")
    assert b.should_pause("a")
    b.add("b", 2, "b2")
    b.add("b", 3, "b3")
    # both over the threshold: nobody could progress, so nobody is told to pause
    assert not b.should_pause("a") and not b.should_pause("b")
    assert b.pending() == 4
    b.add("a", 4, "a4")  # 5 incomplete > 4: the lowest id (0) goes
    assert b.pending() == 4
    assert b.anomalies.as_dict() == {BUNDLE_OVERFLOW: 1}
    assert b.held("a") == 2 and b.held("b") == 2
    # a late part of the evicted bundle is dropped, not held
    assert b.add("b", 0, "b0") is None
    assert b.pending() == 4
    assert b.anomalies.as_dict() == {BUNDLE_OVERFLOW: 2}
    assert b.add("b", 1, "b1") == ("a1", "b1")


def test_following_pause_hints_joins_a_run_ahead_input_without_overflow() -> None:
    """A reader that prefers input a but obeys should_pause never overflows."""
    n = 2000
    queues = {"a": list(range(n)), "b": list(range(n))}
    b = Bundler(["a", "b"], max_pending=10)
    out = []
    while queues["a"] or queues["b"]:
        name = next(name for name in ("a", "b") if queues[name] and not b.should_pause(name))
        seq = queues[name].pop(0)
        bundle = b.add(name, seq, (name, seq))
        if bundle is not None:
            out.append(bundle)
        assert b.pending() <= 10
    assert out == [(("a", i), ("b", i)) for i in range(n)]
    assert b.anomalies.total() == 0


def test_heap_stays_compact() -> None:
    b = Bundler(["a", "b"])
    for seq in range(10_000):
        b.add("a", seq, seq)
        b.add("b", seq, seq)
    assert len(b._heap) <= 2 * b.pending() + 65


# ---------------------------------------------------------------------- properties


@st.composite
def arrivals(draw: st.DrawFn, max_ids: int = 12) -> tuple[list[str], list[tuple[str, int]]]:
    """Inputs, plus a random interleaving of (input, id) parts with gaps and duplicates."""
    k = draw(st.integers(1, 4))
    inputs = [f"in{i}" for i in range(k)]
    n = draw(st.integers(0, max_ids))
    parts = []
    for seq in range(n):
        for name in inputs:
            copies = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
            parts.extend([(name, seq)] * copies)
    return inputs, draw(st.permutations(parts))


@settings(max_examples=150, deadline=None)
@given(arrivals())
def test_every_complete_id_emitted_once_with_exact_anomalies(
    case: tuple[list[str], list[tuple[str, int]]],
) -> None:
    inputs, parts = case
    b = Bundler(inputs)
    emitted: dict[int, tuple[object, ...]] = {}
    first_value: dict[tuple[str, int], object] = {}
    for copy, (name, seq) in enumerate(parts):
        value = (name, seq, copy)
        first_value.setdefault((name, seq), value)
        result = b.add(name, seq, value)
        if result is not None:
            assert seq not in emitted
            emitted[seq] = result
        assert not all(b.should_pause(name) for name in inputs)
    copies = Counter(parts)
    ids = {seq for _, seq in parts}
    complete = {seq for seq in ids if all((name, seq) in copies for name in inputs)}
    assert set(emitted) == complete
    for seq, values in emitted.items():
        assert values == tuple(first_value[(name, seq)] for name in inputs)
    assert b.anomalies.get(DUPLICATE_PART) == sum(c - 1 for c in copies.values())
    assert b.pending() == len(ids - complete)
    for name in inputs:
        assert b.held(name) == sum(1 for seq in ids - complete if (name, seq) in copies)
    assert b.finish() == len(ids - complete)
    assert b.anomalies.get(INCOMPLETE_BUNDLE) == len(ids - complete)
    assert b.anomalies.get(BUNDLE_OVERFLOW) == 0


@settings(max_examples=150, deadline=None)
@given(arrivals(max_ids=20), st.integers(1, 6))
def test_bounded_memory_and_pause_hints(
    case: tuple[list[str], list[tuple[str, int]]], max_pending: int
) -> None:
    inputs, parts = case
    b = Bundler(inputs, max_pending=max_pending)
    for name, seq in parts:
        result = b.add(name, seq, (name, seq))
        if result is not None:
            assert result == tuple((n, seq) for n in inputs)
        assert b.pending() <= max_pending
        assert not all(b.should_pause(n) for n in inputs)
        assert sum(b.held(n) for n in inputs) == sum(
            sum(v is not _MISSING for v in entry[:-1]) for entry in b._pending.values()
        )
        assert len(b._closed) <= max_pending
    pending = b.pending()
    assert b.finish() == pending

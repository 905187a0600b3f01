"""Sequencer: strict order, gaps, late and duplicate ids, gap_timeout on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.runtime.anomalies import DUPLICATE_ID, GAP_SKIPPED, LATE_ID
from clusterduck.runtime.sequencer import Sequencer


class FakeClock:
    """A clock the test moves by hand: no sleeping."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def ids(pairs: list[tuple[int, Any]]) -> list[int]:
    return [seq for seq, _ in pairs]


# ---------------------------------------------------------------------- unit tests


def test_in_order_passes_straight_through() -> None:
    s = Sequencer(5)
    assert s.add(5, "a") == [(5, "a")]
    assert s.add(6, "b") == [(6, "b")]
    assert s.cursor == 7 and s.waiting() == 0
    assert s.next_deadline() is None and s.poll() == [] and s.finish() == []
    assert s.anomalies.total() == 0


def test_out_of_order_waits_then_releases_the_contiguous_run() -> None:
    s = Sequencer()
    assert s.add(2, "c") == []
    assert s.add(1, "b") == []
    assert s.add(4, "e") == []
    assert s.waiting() == 3
    assert s.add(0, "a") == [(0, "a"), (1, "b"), (2, "c")]
    assert s.cursor == 3 and s.waiting() == 1
    assert s.add(3, "d") == [(3, "d"), (4, "e")]
    assert s.anomalies.total() == 0


def test_late_and_duplicate_ids_are_dropped_and_counted() -> None:
    s = Sequencer(10)
    assert s.add(9, "before start") == []
    s.add(10, "x")
    assert s.add(10, "again") == []  # released already: late
    s.add(12, "first")
    assert s.add(12, "second") == []  # waiting: duplicate
    assert s.anomalies.as_dict() == {LATE_ID: 2, DUPLICATE_ID: 1}
    assert s.add(11, "y") == [(11, "y"), (12, "first")]


def test_finish_releases_past_gaps_and_counts_missing_ids() -> None:
    s = Sequencer()
    s.add(3, "d")
    s.add(7, "h")
    s.add(8, "i")
    assert s.finish() == [(3, "d"), (7, "h"), (8, "i")]
    assert s.anomalies.as_dict() == {GAP_SKIPPED: 3 + 3}
    assert s.cursor == 9 and s.waiting() == 0


def test_memory_bound_skips_the_gap() -> None:
    s = Sequencer(max_pending=2)
    assert s.add(5, "f") == []
    assert s.add(6, "g") == []
    assert s.add(9, "j") == [(5, "f"), (6, "g")]  # 3 waiting > 2: skip 0..4
    assert s.anomalies.as_dict() == {GAP_SKIPPED: 5}
    assert s.cursor == 7 and s.waiting() == 1


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        Sequencer(gap_timeout=-1)
    with pytest.raises(ValueError):
        Sequencer(max_pending=0)


def test_no_clock_reads_without_gap_timeout() -> None:
    clock = FakeClock()
    s = Sequencer(clock=clock)
    s.add(1, None)
    s.add(0, None)
    s.finish()
    assert clock.reads == 0


# ---------------------------------------------------------------------- gap_timeout


def test_gap_timeout_skips_after_the_timeout_not_before() -> None:
    clock = FakeClock(0.0)
    s = Sequencer(gap_timeout=5, clock=clock)
    assert s.next_deadline() is None
    assert s.add(1, "b") == []
    assert s.next_deadline() == 5.0
    clock.now = 4.99
    assert s.poll() == []
    clock.now = 5.0
    assert s.poll() == [(1, "b")]
    assert s.anomalies.as_dict() == {GAP_SKIPPED: 1}
    assert s.next_deadline() is None and s.cursor == 2
    assert s.add(0, "late") == []
    assert s.anomalies.get(LATE_ID) == 1


def test_timer_starts_when_a_later_id_is_ready() -> None:
    """The cursor's id being missing alone starts nothing; a later id waiting does."""
    clock = FakeClock(0.0)
    s = Sequencer(gap_timeout=5, clock=clock)
    s.add(0, "a")
    clock.now = 100.0
    assert s.add(2, "c") == []
    assert s.next_deadline() == 105.0
    clock.now = 102.0
    s.add(3, "d")  # a second waiting id does not restart the timer
    assert s.next_deadline() == 105.0


def test_timer_restarts_for_the_next_gap() -> None:
    clock = FakeClock(0.0)
    s = Sequencer(gap_timeout=5, clock=clock)
    s.add(1, "b")
    s.add(3, "d")
    clock.now = 7.0  # polled late
    assert s.poll() == [(1, "b")]
    assert s.next_deadline() == 12.0  # the gap at 2 exists from now
    clock.now = 11.0
    assert s.poll() == []
    clock.now = 12.0
    assert s.poll() == [(3, "d")]
    assert s.anomalies.as_dict() == {GAP_SKIPPED: 2}


def test_filling_the_gap_stops_or_restarts_the_timer() -> None:
    clock = FakeClock(0.0)
    s = Sequencer(gap_timeout=5, clock=clock)
    s.add(1, "b")
    s.add(3, "d")
    clock.now = 3.0
    assert s.add(0, "a") == [(0, "a"), (1, "b")]
    assert s.next_deadline() == 8.0  # the new gap (2) has 3 behind it from now
    assert s.add(2, "c") == [(2, "c"), (3, "d")]
    assert s.next_deadline() is None
    assert s.anomalies.total() == 0


def test_add_also_honours_an_expired_timer() -> None:
    clock = FakeClock(0.0)
    s = Sequencer(gap_timeout=5, clock=clock)
    s.add(2, "c")
    clock.now = 6.0
    assert s.add(5, "f") == [(2, "c")]
    assert s.next_deadline() == 11.0
    assert s.anomalies.get(GAP_SKIPPED) == 2


def test_zero_gap_timeout_never_waits() -> None:
    s = Sequencer(gap_timeout=0, clock=FakeClock())
    assert s.add(2, "c") == [(2, "c")]
    assert s.add(4, "e") == [(4, "e")]
    assert s.next_deadline() is None
    assert s.anomalies.get(GAP_SKIPPED) == 3


# ---------------------------------------------------------------------- properties

arrival_lists = st.lists(st.integers(-3, 40), max_size=80)


def reference(start: int, arrivals: list[int]) -> tuple[list[list[int]], list[int], int, int]:
    """The expected behaviour without skips: per-add releases, finish, late and dup counts."""
    cursor, received, late, dup, steps = start, set(), 0, 0, []
    for seq in arrivals:
        if seq < cursor:
            late += 1
            steps.append([])
        elif seq in received:
            dup += 1
            steps.append([])
        else:
            received.add(seq)
            step = []
            while cursor in received:
                step.append(cursor)
                cursor += 1
            steps.append(step)
    return steps, sorted(s for s in received if s >= cursor), late, dup


@settings(max_examples=200, deadline=None)
@given(st.integers(-2, 5), arrival_lists)
def test_matches_reference_without_skips(start: int, arrivals: list[int]) -> None:
    s = Sequencer(start)
    steps, rest, late, dup = reference(start, arrivals)
    for seq, expected in zip(arrivals, steps, strict=True):
        got = s.add(seq, f"v{seq}")
        assert got == [(i, f"v{i}") for i in expected]
    cursor_before = s.cursor
    final = s.finish()
    assert ids(final) == rest
    missing = (rest[-1] + 1 - cursor_before - len(rest)) if rest else 0
    assert s.anomalies.as_dict() == {
        k: v for k, v in {LATE_ID: late, DUPLICATE_ID: dup, GAP_SKIPPED: missing}.items() if v
    }


Event = tuple[str, int]
events = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-2, 30)),
        st.tuples(st.just("tick"), st.integers(0, 4)),
        st.tuples(st.just("poll"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(
    events,
    st.integers(1, 5),
    st.one_of(st.none(), st.integers(0, 6)),
)
def test_invariants_with_skips(evs: list[Event], max_pending: int, timeout: int | None) -> None:
    clock = FakeClock(0.0)
    s = Sequencer(gap_timeout=timeout, max_pending=max_pending, clock=clock)
    released: list[int] = []
    accepted: set[int] = set()
    late = dup = 0
    for kind, arg in evs:
        deadline = s.next_deadline()
        skipped_before = s.anomalies.get(GAP_SKIPPED)
        forced = False  # does this add overflow max_pending?
        if kind == "tick":
            clock.now += arg
            continue
        if kind == "add":
            if arg < s.cursor:
                late += 1
            elif arg in accepted:
                dup += 1
            else:
                accepted.add(arg)
                forced = arg > s.cursor and s.waiting() == max_pending
            out = s.add(arg, arg)
        else:
            out = s.poll()
            if deadline is None or clock.now < deadline:
                assert out == []
        assert all(seq == item for seq, item in out)
        released.extend(ids(out))
        if s.anomalies.get(GAP_SKIPPED) > skipped_before and not forced:
            # a skip not forced by the memory bound happens only once the timer expired
            # (a timer started by this very add expires at once only if timeout is 0)
            assert timeout is not None
            assert clock.now >= (deadline if deadline is not None else clock.now + timeout)
        assert s.waiting() <= max_pending
        if timeout is not None:
            assert (s.next_deadline() is None) == (s.waiting() == 0)
            if s.next_deadline() is not None and timeout > 0:
                assert s.next_deadline() > clock.now
    released.extend(ids(s.finish()))
    assert released == sorted(set(released))  # strictly increasing
    assert set(released) == accepted
    assert s.waiting() == 0
    assert s.anomalies.get(LATE_ID) == late
    assert s.anomalies.get(DUPLICATE_ID) == dup
    if released:
        assert s.anomalies.get(GAP_SKIPPED) == released[-1] + 1 - len(released)

"""InputGate: the pause/starve policy of a bundled worker, on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clusterduck.runtime.gate import InputGate


class FakeClock:
    def __init__(self, now: float = 50.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


INPUTS = {"left", "right"}


def test_nothing_ahead_reads_every_open_input() -> None:
    gate = InputGate(INPUTS, clock=FakeClock())
    assert gate.plan(INPUTS, lambda name: False) == INPUTS
    gate.heard({"left"})
    assert not gate.starving and gate.paused == frozenset()


def test_an_input_that_runs_ahead_is_paused_while_the_other_speaks() -> None:
    clock = FakeClock()
    gate = InputGate(INPUTS, grace=2.0, clock=clock)
    for _ in range(100):
        assert gate.plan(INPUTS, lambda name: name == "left") == {"right"}
        clock.now += 1.0  # long silences between, but the lagging input does speak
        gate.heard({"right"})
    assert not gate.starving


def test_silence_of_the_others_beyond_grace_reads_on() -> None:
    clock = FakeClock()
    gate = InputGate(INPUTS, grace=2.0, clock=clock)
    assert gate.plan(INPUTS, lambda name: name == "left") == {"right"}
    gate.heard(set())
    clock.now += 1.5
    assert gate.plan(INPUTS, lambda name: name == "left") == {"right"}
    gate.heard(set())
    assert not gate.starving
    clock.now += 1.0  # 2.5 s of silence from "right"
    gate.plan(INPUTS, lambda name: name == "left")
    gate.heard(set())
    assert gate.starving
    # Starving: everything is read until no input is ahead any more.
    assert gate.plan(INPUTS, lambda name: name == "left") == INPUTS
    gate.heard({"left"})
    assert gate.starving
    assert gate.plan(INPUTS, lambda name: False) == INPUTS
    gate.heard({"left"})
    assert not gate.starving


def test_an_ended_input_disables_pausing() -> None:
    gate = InputGate(INPUTS, clock=FakeClock())
    assert gate.plan({"left"}, lambda name: True) == {"left"}


@given(
    st.lists(
        st.tuples(
            st.sets(st.sampled_from(sorted(INPUTS))),  # inputs ahead at this turn
            st.sets(st.sampled_from(sorted(INPUTS))),  # inputs that delivered
            st.floats(min_value=0.0, max_value=1.0),  # time passing
        ),
        max_size=200,
    )
)
def test_any_arrival_order_keeps_the_invariants(
    turns: list[tuple[set[str], set[str], float]],
) -> None:
    """Whatever arrives: the plan is a subset of the open inputs; never every open input
    is paused; and an input is never paused longer than grace of silence from the others."""
    clock = FakeClock()
    gate = InputGate(INPUTS, grace=2.0, clock=clock)
    silent_since: float | None = None
    for ahead, delivered, step in turns:
        plan = gate.plan(INPUTS, lambda name, ahead=ahead: name in ahead)
        assert plan <= INPUTS
        if ahead != INPUTS:
            assert plan, "every input paused: a deadlock"
        heard = delivered & set(plan)
        gate.heard(heard)
        clock.now += step
        paused = INPUTS - set(plan)
        if paused and not (heard - paused):
            silent_since = clock.now if silent_since is None else silent_since
            assert clock.now - silent_since <= 2.0 + 1.0 + 1e-9 or gate.starving
        else:
            silent_since = None

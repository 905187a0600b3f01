"""A bundled or sequential worker held up by an id that never comes is not silent:
``status`` names it (table and ``--json`` problems, the row's ``gap``) and the worker's
own log warns once (runtime/stall.py, clusterduck/gaps.py)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_fixtures import TOPOLOGIES, Clusterduck, instance, wait_until

from clusterduck.exceptions import ProtocolError
from clusterduck.gaps import gap_problems
from clusterduck.protocol import (
    ComponentSpec,
    ComponentStatus,
    GapStatus,
    InstanceReport,
    InstanceStatus,
    Op,
    State,
    TopologySpec,
)
from clusterduck.runtime.bundler import Bundler
from clusterduck.runtime.sequencer import Sequencer
from clusterduck.runtime.stall import GAP_WARN_SECONDS, GapWatch, waiting_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sequencer_waiting_at_its_cursor_is_a_gap_once_it_lasts() -> None:
    seq = Sequencer(0)
    assert seq.add(0, "a") == [(0, "a")]
    assert seq.add(2, "c") == []  # 1 is missing, 2 waits behind it
    clock = FakeClock()
    watch = GapWatch(clock=clock)
    assert watch.see(waiting_for(None, seq)) is None  # just started waiting
    assert not watch.warn_now()
    clock.now += GAP_WARN_SECONDS
    assert watch.see(waiting_for(None, seq)) == GapStatus(1, GAP_WARN_SECONDS, ())
    assert watch.warn_now()
    assert not watch.warn_now()  # once per id
    seq.add(1, "b")  # it came: nothing waits any more
    assert waiting_for(None, seq) is None
    assert watch.see(None) is None


def test_a_bundle_passed_by_later_ids_names_the_missing_input() -> None:
    bundler = Bundler(["square", "double"])
    clock = FakeClock()
    watch = GapWatch(clock=clock)
    bundler.add("double", 5, 10)
    # Only one part so far, nothing later completed: merely slow, not a gap.
    assert waiting_for(bundler, None) is None
    assert bundler.add("square", 6, 36) is None
    assert bundler.add("double", 6, 12) == (36, 12)
    assert waiting_for(bundler, None) == (5, ("square",))
    watch.see(waiting_for(bundler, None))
    clock.now += GAP_WARN_SECONDS + 1
    gap = watch.see(waiting_for(bundler, None))
    assert gap == GapStatus(5, GAP_WARN_SECONDS + 1, ("square",))
    # The sequencer behind the bundler waits at the same id: the bundler says what lacks.
    seq = Sequencer(5)
    seq.add(6, (36, 12))
    assert waiting_for(bundler, seq) == (5, ("square",))


def test_a_new_gap_starts_its_own_clock() -> None:
    clock = FakeClock()
    watch = GapWatch(clock=clock)
    watch.see((3, ()))
    clock.now += GAP_WARN_SECONDS
    assert watch.see((3, ())) is not None and watch.warn_now()
    assert watch.see((9, ())) is None  # a later gap: waited 0 s so far
    clock.now += GAP_WARN_SECONDS
    assert watch.see((9, ())) == GapStatus(9, GAP_WARN_SECONDS, ())
    assert watch.warn_now()


def _spec(gap_timeout: float | None = None, guarantee: str = "at-most-once") -> TopologySpec:
    return TopologySpec(
        "t",
        (
            ComponentSpec("numbers", "spout", "m:f"),
            ComponentSpec("square", "worker", "m:f", parallelism=2, inputs=("numbers",)),
            ComponentSpec("double", "worker", "m:f", inputs=("numbers",)),
            ComponentSpec(
                "join",
                "worker",
                "m:f",
                inputs=("square", "double"),
                bundle=True,
                sequential=True,
                gap_timeout=gap_timeout,
            ),
        ),
        guarantee=guarantee,
    )


def _rows(crashed: bool, gap: GapStatus | None) -> list[ComponentStatus]:
    def row(comp: str, i: int, **kw: object) -> InstanceStatus:
        return InstanceStatus(comp, i, "localhost", State.RUNNING, **kw)  # type: ignore[arg-type]

    return [
        ComponentStatus("numbers", "spout", (row("numbers", 0),)),
        ComponentStatus(
            "square",
            "worker",
            (row("square", 0), row("square", 1, restarts=int(crashed), lost=2 * crashed)),
        ),
        ComponentStatus("double", "worker", (row("double", 0),)),
        ComponentStatus("join", "worker", (row("join", 0, gap=gap),)),
    ]


def test_the_problem_line_blames_the_crashed_input_and_names_the_fix() -> None:
    gap = GapStatus(2307, 12.0, ("square",))
    (line,) = gap_problems(_spec(), _rows(crashed=True, gap=gap))
    assert line.startswith("join/0 has waited 12 s for id 2307 (its part from square has not")
    assert "lost when square/1 crashed?" in line
    assert "set gap_timeout" in line and "guarantee: at-least-once" in line
    (line,) = gap_problems(_spec(gap_timeout=60), _rows(crashed=True, gap=gap))
    assert "gap_timeout 60s skips it" in line
    # No crash upstream: the id is late (a long call) or was filtered out, not a problem
    # to report, and "set gap_timeout" would skip ids that were merely late.
    assert gap_problems(_spec(), _rows(crashed=False, gap=gap)) == []
    (line,) = gap_problems(_spec(guarantee="at-least-once"), _rows(crashed=True, gap=gap))
    assert "replays it after message_timeout" in line
    assert gap_problems(_spec(), _rows(crashed=True, gap=None)) == []


# The rest of both topologies below: `square` (each test's own) and `double` into a
# bundled sequential join, and a printer.
JOINED = (
    "  - {name: double, entry: 'lc_parts:double', inputs: [numbers]}\n"
    "  - {name: join, entry: 'lc_parts:join', inputs: [square, double],"
    " bundle: true, sequential: true}\n"
    "  - {name: printer, entry: 'lc_parts:Printer', inputs: [join]}\n"
)

DROPPER = """\
def drop_7(value):
    return None if value == 7 else value * value
"""


def test_a_join_waiting_for_a_lost_id_is_a_problem_in_status_and_its_log(
    duck: Clusterduck, tmp_path: Path
) -> None:
    """ids 0..29; `square` forwards nothing for id 7 (filtered out: no crash), so the
    bundled sequential join holds everything after 7 until the stream ends. Its row
    and its log say what it waits for; with no crash upstream it is no `problem` (the
    crash case: test_an_id_lost_in_a_crash_is_blamed_on_the_crashed_instance)."""
    name = duck.name("gap")
    (tmp_path / "user.py").write_text(DROPPER)
    (tmp_path / "lc_parts.py").write_text((TOPOLOGIES / "lc_parts.py").read_text())
    end = tmp_path / "end"
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "code: .\n"
        "spouts:\n"
        "  - {name: numbers, entry: 'lc_parts:count_up_then_wait',"
        f" args: {{end: '{end}', count: 30}}}}\n"
        "workers:\n"
        "  - {name: square, entry: 'user:drop_7', inputs: [numbers]}\n" + JOINED
    )
    up = duck.run("up", str(path))
    assert up.returncode == 0, up.stderr

    def stalled() -> dict[str, object] | None:
        doc = duck.status(name)
        return doc if instance(doc, "join")["gap"] else None

    doc = wait_until(stalled, timeout=60, what="status to report the gap")
    assert doc["problems"] == [], doc["problems"]
    gap = instance(doc, "join")["gap"]
    assert gap["seq"] == 7 and gap["missing"] == ["square"], gap
    assert gap["seconds"] >= GAP_WARN_SECONDS

    def warned() -> str:
        out = duck.run("logs", name, "join").stdout
        return out if "has waited" in out else ""

    log = wait_until(warned, what="join's warning")
    assert "WARNING" in log and "for id 7" in log, log
    assert log.count("has waited") == 1, log

    # The stream ends: the join runs the rest past the gap and the problem is gone.
    end.touch()
    wait_until(lambda: duck.status(name)["state"] == "finished", what="the topology to finish")
    final = duck.status(name)
    assert final["problems"] == [], final["problems"]
    assert instance(final, "join")["gap"] is None


def test_a_gap_crosses_the_report_and_the_status_row_intact() -> None:
    gap = GapStatus(2307, 12.5, ("square",))
    report = InstanceReport(Op.REPORT, 42, state=State.RUNNING, gap=gap)
    assert InstanceReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    plain = InstanceReport(Op.REPORT, 42)
    assert InstanceReport.from_dict(json.loads(json.dumps(plain.to_dict()))).gap is None
    row = InstanceStatus("join", 0, "localhost", State.RUNNING, gap=gap)
    assert InstanceStatus.from_dict(row.to_dict(with_component=True)) == row
    for bad in ("seq 5", {"seq": "5"}, {"seconds": 1.0}, [5]):
        with pytest.raises(ProtocolError):
            InstanceReport.from_dict({**plain.to_dict(), "gap": bad})


CRASHY = """\
import os
import time
from pathlib import Path


def two_rounds(dispatch, more, end):
    for i in range(30):
        dispatch(i, i)
    while not Path(more).exists():
        time.sleep(0.01)
    for i in range(30, 60):
        dispatch(i, i)
    while not Path(end).exists():
        time.sleep(0.01)


def hang_once_at_7(value, marker):
    if value == 7 and not os.path.exists(marker):
        Path(marker).touch()
        time.sleep(3600)  # killed here by the test
    return value * value
"""


def test_an_id_lost_in_a_crash_is_blamed_on_the_crashed_instance(
    duck: Clusterduck, tmp_path: Path
) -> None:
    """The trial's case: square/0 is killed (-9) while it holds ids up to 29; its restart
    handles 30..59, so the join's later bundles complete and it waits at 7 for good."""
    name = duck.name("crash-gap")
    (tmp_path / "user.py").write_text(CRASHY)
    (tmp_path / "lc_parts.py").write_text((TOPOLOGIES / "lc_parts.py").read_text())
    more, end, marker = tmp_path / "more", tmp_path / "end", tmp_path / "hung"
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "code: .\n"
        "spouts:\n"
        f"  - {{name: numbers, entry: 'user:two_rounds', args: {{more: '{more}', end: '{end}'}}}}\n"
        "workers:\n"
        f"  - {{name: square, entry: 'user:hang_once_at_7', inputs: [numbers],"
        f" args: {{marker: '{marker}'}}}}\n" + JOINED
    )
    up = duck.run("up", str(path))
    assert up.returncode == 0, up.stderr
    wait_until(marker.exists, what="square to hang at id 7")
    pid = instance(duck.status(name), "square")["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        row = instance(duck.status(name), "square")
        return row["restarts"] == 1 and row["state"] == "running" and row["pid"] != pid

    wait_until(restarted, what="square/0 to be restarted")
    more.touch()

    def stalled() -> list[str]:
        return list(duck.status(name)["problems"])

    (problem,) = wait_until(stalled, timeout=60, what="status to report the gap")
    assert problem.startswith("join/0 has waited "), problem
    # The first id square did not pass on: 7, or lower when it holds a slice's results
    # until the whole slice is done (runtime/component.py, _map_plain).
    assert re.search(
        r"for id [0-7] \(its part from square has not come; lost when square/0 crashed\?\)",
        problem,
    ), problem
    end.touch()
    wait_until(lambda: duck.status(name)["state"] == "finished", what="the topology to finish")


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(min_value=2, max_value=40))
def test_whatever_the_arrival_order_the_lost_id_is_what_a_join_waits_for(
    data: st.DataObject, n: int
) -> None:
    """Ids 0..n-1 from two inputs in any interleaving; one input loses one id. A bundled
    sequential join then waits for exactly that id (with that input missing) when a
    later id exists, and for nothing when the lost id is the last."""
    lost = data.draw(st.integers(min_value=0, max_value=n - 1))
    parts = [("square", i) for i in range(n) if i != lost] + [("double", i) for i in range(n)]
    order = data.draw(st.permutations(parts))
    bundler, sequencer = Bundler(["square", "double"]), Sequencer(0)
    for name, seq in order:
        values = bundler.add(name, seq, seq)
        if values is not None:
            sequencer.add(seq, values)
    expected = (lost, ("square",)) if lost < n - 1 else None
    assert waiting_for(bundler, sequencer) == expected
    # Without the sequencer (a bundled-only worker), the same id is the stuck bundle.
    assert waiting_for(bundler, None) == expected

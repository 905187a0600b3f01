"""The line under a running topology's status table that names its bottleneck: the
README's "highest ms/msg × rate", worked out so that nobody has to multiply columns."""

from __future__ import annotations

from rich.console import Console

from clusterduck.cli.console import status_table
from clusterduck.protocol import ComponentStatus, InstanceStatus, State, TopologyStatus


def instance(name: str, index: int, cost_ms: float, rate: float, state: State) -> InstanceStatus:
    return InstanceStatus(
        name, index, "localhost", state, pid=100 + index, cost_ms=cost_ms, rate=rate
    )


def pipeline(work_cost_ms: float, state: State = State.RUNNING) -> TopologyStatus:
    """src -> work (4 instances, 150 msgs/s each) -> sink (600 msgs/s at 0.1 ms)."""
    work = tuple(instance("work", i, work_cost_ms, 150.0, state) for i in range(4))
    return TopologyStatus(
        "slow",
        state,
        components=(
            ComponentStatus("src", "spout", (instance("src", 0, 0.0, 600.0, state),)),
            ComponentStatus("work", "worker", work),
            ComponentStatus("sink", "worker", (instance("sink", 0, 0.1, 600.0, state),)),
        ),
    )


def rendered(status: TopologyStatus) -> str:
    console = Console(width=250, record=True)
    console.print(status_table(status))
    return console.export_text()


def test_a_busy_component_is_named_with_its_share_and_the_fix() -> None:
    text = rendered(pipeline(6.0))  # 6 ms x 150/s: 90% of each instance's time
    line = next(line for line in text.splitlines() if line.startswith("bottleneck:"))
    assert line.startswith("bottleneck: work, busy 90% (4 instances, 6 ms/msg × 150 msgs/s each)")
    assert "raise its parallelism" in line


def test_no_line_when_nothing_is_busy_or_the_topology_ended() -> None:
    assert "bottleneck" not in rendered(pipeline(1.0))  # 15%: the spout sets the pace
    assert "bottleneck" not in rendered(pipeline(6.0, State.FINISHED))


def test_a_share_above_one_reads_as_fully_busy() -> None:
    """cost and rate are averages over different windows: their product may pass 100%."""
    assert "bottleneck: work, busy 100%" in rendered(pipeline(20.0))

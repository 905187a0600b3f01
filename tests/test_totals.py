"""runtime/totals.Carried: an instance's counters summed over its incarnations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clusterduck.protocol import InstanceReport, InstanceStatus, Op, State
from clusterduck.runtime.totals import Carried

counts = st.integers(min_value=0, max_value=10**9)
kinds = st.dictionaries(st.sampled_from(["late_id", "gap_skipped", "header"]), counts)
reports = st.builds(
    InstanceReport,
    op=st.just(Op.REPORT),
    pid=st.integers(min_value=1, max_value=10**6),
    received=counts,
    emitted=counts,
    errors=counts,
    replayed=counts,
    backlog=counts,
    anomalies=kinds,
    rejected_frames=kinds,
)


@given(st.lists(reports, min_size=1, max_size=6))
def test_every_incarnation_counts_once(incarnations: list[InstanceReport]) -> None:
    carried = Carried()
    for ended in incarnations[:-1]:
        carried.add(ended)
    now = incarnations[-1]
    row = InstanceStatus(
        "w",
        0,
        "localhost",
        State.RUNNING,
        received=now.received,
        emitted=now.emitted,
        errors=now.errors,
        replayed=now.replayed,
        backlog=now.backlog,
        anomalies=now.anomalies,
        rejected_frames=now.rejected_frames,
    )
    total = carried.onto(row)
    for field in ("received", "emitted", "errors", "replayed"):
        assert getattr(total, field) == sum(getattr(r, field) for r in incarnations)
    for field in ("anomalies", "rejected_frames"):
        summed: dict[str, int] = {}
        for r in incarnations:
            for kind, n in getattr(r, field).items():
                summed[kind] = summed.get(kind, 0) + n
        assert dict(getattr(total, field)) == summed
    assert total.backlog == now.backlog  # a gauge of the running process: not carried


def test_nothing_carried_leaves_the_row_as_it_is() -> None:
    row = InstanceStatus("w", 0, "localhost", State.RUNNING, received=5)
    assert Carried().onto(row) is row

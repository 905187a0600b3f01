"""The dashboard's pure parts: rate history from successive statuses, error and anomaly
lines parsed out of process logs, the Prometheus exposition of a status document."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("prometheus_client")

from clusterduck.dashboard.history import MAX_SAMPLES, History  # noqa: E402
from clusterduck.dashboard.metrics import exposition  # noqa: E402
from clusterduck.dashboard.status_source import parse_events  # noqa: E402


def status(
    emitted: list[int], blocked: list[float] | None = None, rate: float = 5.0
) -> dict[str, Any]:
    rows = [
        {
            "index": i,
            "host": "localhost",
            "state": "running",
            "received": 0,
            "emitted": e,
            "errors": 0,
            "anomalies": {},
            "backlog": 0,
            "rate": rate,
            "restarts": 0,
            "uptime": 1.0,
            "blocked_seconds": (blocked or [0.0] * 9)[i],
            "pid": 1,
            "endpoint": None,
            "last_error": None,
        }
        for i, e in enumerate(emitted)
    ]
    return {
        "name": "t",
        "state": "running",
        "components": [{"name": "a", "kind": "spout", "instances": rows}],
    }


def test_history_rates_from_counter_growth() -> None:
    h = History()
    h.add(10.0, status([0, 0]))
    h.add(12.0, status([100, 60], blocked=[1.0, 0.0]))
    last = h.latest("a")
    assert last is not None
    assert last.emitted_rate == 80.0  # 160 more in 2 s
    assert last.blocked == 0.25  # 1 s of 2 s, over 2 instances
    assert last.rate == 10.0  # the instances' own rates, summed
    doc = h.to_dict(now=12.0)["a"]
    assert doc["rates"] == [[-2.0, 10.0], [0.0, 10.0]] and doc["emitted_rate"] == 80.0


def test_a_restart_is_not_a_negative_rate() -> None:
    h = History()
    h.add(0.0, status([500]))
    h.add(1.0, status([3]))  # the instance restarted: its counters began again
    last = h.latest("a")
    assert last is not None and last.emitted_rate == 0.0


@given(
    st.lists(st.tuples(st.floats(0.01, 50), st.integers(0, 10**6), st.floats(0, 100)), max_size=300)
)
def test_history_is_bounded_and_within_its_window(steps: list[tuple[float, int, float]]) -> None:
    h = History(window=60.0)
    t = 0.0
    for dt, emitted, blocked in steps:
        t += dt
        h.add(t, status([emitted], blocked=[blocked]))
        queue = h.samples["a"]
        assert len(queue) <= MAX_SAMPLES
        assert all(t - 60.0 <= s.t <= t for s in queue)
        assert all(s.emitted_rate >= 0 and 0 <= s.blocked <= 1 for s in queue)


LOG = """\
2026-11-28 04:33:55,120 INFO [check/0] started
2026-11-28 04:33:55,187 ERROR [check/0] check raised on seq 1199 (message dropped):
Traceback (most recent call last):
  File "/x/lc_parts.py", line 150, in flaky
    raise ValueError(f"flaky: refusing {value}")
ValueError: flaky: refusing 1199
2026-11-28 04:33:56,003 WARNING [join/0] join/0: gap_skipped at seq 1199 - never arrived
some line a user printed
2026-11-28 04:33:57,000 WARNING [join/0] no seq here
"""


def test_parse_events_keeps_warnings_and_errors_with_seq_ids() -> None:
    events = parse_events(LOG)
    assert [(e.level, e.instance, e.seq) for e in events] == [
        ("ERROR", "check/0", 1199),
        ("WARNING", "join/0", 1199),
        ("WARNING", "join/0", None),
    ]
    assert events[0].message.endswith("ValueError: flaky: refusing 1199")
    assert events[0].time == "2026-11-28 04:33:55"


def test_exposition_labels_and_values() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    doc = status([7])
    doc["components"][0]["instances"][0].update(anomalies={"late_id": 3}, restarts=2)
    families = {f.name: f for f in text_string_to_metric_families(exposition([doc]).decode())}
    (emitted,) = families["clusterduck_emitted"].samples
    assert emitted.labels == {
        "topology": "t",
        "component": "a",
        "instance": "0",
        "host": "localhost",
    }
    assert emitted.value == 7
    (late,) = families["clusterduck_anomalies"].samples
    assert late.labels["kind"] == "late_id" and late.value == 3
    assert families["clusterduck_restarts"].samples[0].value == 2


def test_exposition_of_rejected_frames_per_instance_and_topology() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    doc = status([1, 2])
    doc["components"][0]["instances"][1]["rejected_frames"] = {"sender": 4, "shape": 1}
    doc["rejected_frames"] = {"control_undecodable": 2}
    families = {f.name: f for f in text_string_to_metric_families(exposition([doc]).decode())}
    assert families["clusterduck_rejected_frames"].type == "counter"
    got = {
        (s.labels["instance"], s.labels["kind"]): s.value
        for s in families["clusterduck_rejected_frames"].samples
        if s.name == "clusterduck_rejected_frames_total"
    }
    assert got == {("1", "sender"): 4, ("1", "shape"): 1}
    (control,) = [
        s
        for s in families["clusterduck_topology_rejected_frames"].samples
        if s.name.endswith("_total")
    ]
    assert control.labels == {"topology": "t", "kind": "control_undecodable"}
    assert control.value == 2

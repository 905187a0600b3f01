"""``GET /metrics``: ``status --json`` documents in the Prometheus text format.

The only module that uses prometheus-client. Values are read from status at scrape time
(a custom collector, nothing cached), so a scrape shows exactly what ``status --json``
shows. Every series carries ``topology``, ``component``, ``instance`` (the instance
index) and ``host``; Prometheus renames a scraped ``instance`` label to
``exported_instance`` unless the scrape config sets ``honor_labels: true`` (the README's
example does).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "INSTANCE_STATES", "TOPOLOGY_STATES", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ["topology", "component", "instance", "host"]
# docs/reference.md §3 instance states, and the topology-level ones `status` adds.
INSTANCE_STATES = (
    "starting",
    "running",
    "draining",
    "finished",
    "failed",
    "crashed",
    "unreachable",
)
TOPOLOGY_STATES = (
    "starting",
    "running",
    "finished",
    "failed",
    "failing",
    "broken",
    "stopped",
    "unreachable",
)


class _StatusCollector(Collector):
    def __init__(self, statuses: Iterable[dict[str, Any]]) -> None:
        self.statuses = list(statuses)

    def collect(self) -> Iterator[Metric]:
        counters = {
            key: CounterMetricFamily(f"clusterduck_{key}", help_, labels=LABELS)
            for key, help_ in [
                ("received", "Messages an instance received."),
                ("emitted", "Messages an instance emitted."),
                ("errors", "Messages whose worker function raised (dropped)."),
                ("restarts", "Times the supervisor restarted the instance."),
            ]
        }
        anomalies = CounterMetricFamily(
            "clusterduck_anomalies",
            "Data anomalies counted by kind (docs/reference.md §1).",
            labels=[*LABELS, "kind"],
        )
        # Frames dropped unread (issue 10): per instance on its inboxes and control
        # socket, and per topology for what its supervisors' control sockets dropped.
        rejected = CounterMetricFamily(
            "clusterduck_rejected_frames",
            "Frames an instance dropped unread, by kind (status: rejected_frames).",
            labels=[*LABELS, "kind"],
        )
        topo_rejected = CounterMetricFamily(
            "clusterduck_topology_rejected_frames",
            "Control messages the topology's supervisors dropped unread, by kind.",
            labels=["topology", "kind"],
        )
        gauges = {
            key: GaugeMetricFamily(f"clusterduck_{name}", help_, labels=LABELS)
            for key, name, help_ in [
                ("backlog", "backlog", "Messages queued inside the instance."),
                ("rate", "rate", "Messages per second the instance processes."),
                ("uptime", "uptime_seconds", "Seconds since the instance (re)started."),
            ]
        }
        state = GaugeMetricFamily(
            "clusterduck_state",
            "1 for the instance's current state, 0 for the others.",
            labels=[*LABELS, "state"],
        )
        topo_state = GaugeMetricFamily(
            "clusterduck_topology_state",
            "1 for the topology's current state.",
            labels=["topology", "state"],
        )
        for status in self.statuses:
            name = status["name"]
            for s in TOPOLOGY_STATES:
                topo_state.add_metric([name, s], 1.0 if status["state"] == s else 0.0)
            for kind, count in sorted((status.get("rejected_frames") or {}).items()):
                topo_rejected.add_metric([name, kind], float(count))
            for comp in status["components"]:
                for row in comp["instances"]:
                    labels = [name, comp["name"], str(row["index"]), str(row["host"])]
                    for key, family in counters.items():
                        family.add_metric(labels, float(row.get(key) or 0))
                    for kind, count in sorted((row.get("anomalies") or {}).items()):
                        anomalies.add_metric([*labels, kind], float(count))
                    for kind, count in sorted((row.get("rejected_frames") or {}).items()):
                        rejected.add_metric([*labels, kind], float(count))
                    for key, gauge in gauges.items():
                        gauge.add_metric(labels, float(row.get(key) or 0))
                    for s in INSTANCE_STATES:
                        state.add_metric([*labels, s], 1.0 if row["state"] == s else 0.0)
        yield from counters.values()
        yield anomalies
        yield rejected
        yield topo_rejected
        yield from gauges.values()
        yield state
        yield topo_state


def exposition(statuses: Iterable[dict[str, Any]]) -> bytes:
    """The text exposition of these status documents."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(statuses))
    return generate_latest(registry)

"""``status`` shows nothing in flight towards a finished instance (deploy.settle_in_flight).

A sender counts a message in flight until the receiver's grant for it is read, and a
sender that ended stops reading grants: before, a finished topology showed thousands of
messages "in flight" on its finished instances."""

from __future__ import annotations

from pathlib import Path

from lifecycle_fixtures import TOPOLOGIES, Clusterduck

from clusterduck.deploy import settle_in_flight
from clusterduck.protocol import ComponentStatus, EdgeStatus, InstanceStatus, State


def row(
    component: str, index: int, state: State, edges: tuple[EdgeStatus, ...] = ()
) -> InstanceStatus:
    return InstanceStatus(
        component, index, "localhost", state, in_flight=sum(e.in_flight for e in edges)
    ).replace(edges=edges)


def test_only_edges_towards_finished_instances_are_settled() -> None:
    to_a0 = EdgeStatus("a/0", credit=5, in_flight=700, waiting=0, queue_ms=3.5)
    to_a1 = EdgeStatus("a/1", credit=5, in_flight=40, waiting=2, queue_ms=1.0)
    components = [
        ComponentStatus("src", "spout", (row("src", 0, State.FINISHED, (to_a0, to_a1)),)),
        ComponentStatus("a", "worker", (row("a", 0, State.FINISHED), row("a", 1, State.RUNNING))),
    ]
    (src, a) = settle_in_flight(components)
    (sender,) = src.instances
    assert sender.in_flight == 40  # a/1 still runs: its 40 may well be queued there
    assert sender.edges == (to_a0.replace(in_flight=0, queue_ms=0.0), to_a1)
    assert a == components[1]
    # Nothing finished: nothing changes.
    running = [ComponentStatus("src", "spout", (row("src", 0, State.RUNNING, (to_a0,)),))]
    assert settle_in_flight(running) == tuple(running)


def test_a_finished_topology_shows_nothing_in_flight(duck: Clusterduck, tmp_path: Path) -> None:
    """50,000 numbers through two workers into a sink: every instance ends with grants
    it never read (this failed on every run before the change)."""
    name = duck.name("settled")
    (tmp_path / "lc_parts.py").write_text((TOPOLOGIES / "lc_parts.py").read_text())
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "code: .\n"
        "spouts:\n"
        "  - {name: numbers, entry: 'lc_parts:count_up', args: {count: 50000}}\n"
        "workers:\n"
        "  - {name: double, entry: 'lc_parts:double', inputs: [numbers], parallelism: 2}\n"
        "  - {name: sink, entry: 'lc_parts:Printer', inputs: [double]}\n"
    )
    done = duck.run("up", str(path), "--wait")
    assert done.returncode == 0, done.stderr
    status = duck.status(name)
    assert status["state"] == "finished", status
    rows = [(c["name"], r) for c in status["components"] for r in c["instances"]]
    assert {r["state"] for _, r in rows} == {"finished"}
    assert any(r["edges"] for _, r in rows)  # the senders did report their edges
    flying = {
        f"{comp}/{r['index']}": (r["in_flight"], [e["in_flight"] for e in r["edges"]])
        for comp, r in rows
        if r["in_flight"] or any(e["in_flight"] or e["queue_ms"] for e in r["edges"])
    }
    assert flying == {}

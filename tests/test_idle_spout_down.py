"""A graceful ``down`` of a spout that waits for its source (it sleeps or blocks between
messages and so never calls ``dispatch``, which is where a down ends a spout) drains and
exits instead of waiting out ``--timeout`` and being killed.

Real processes through the CLI (``lifecycle_fixtures``): ``held.yaml``'s spout sends 100
ids, then sleeps until a file appears; the test never creates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lifecycle_fixtures import Clusterduck, instance, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _down_once_through(duck: Clusterduck, name: str, count: int) -> dict[str, Any]:
    """Once the sink has all ``count`` ids: a graceful down, which must end without
    killing anything; the final status."""
    wait_until(
        lambda: instance(duck.status(name), "sink")["received"] == count,
        what=f"the {count} ids at the sink",
    )
    stopped = duck.down(name, "--timeout", "30")
    assert stopped.returncode == 0, stopped.stderr
    final = duck.status(name)
    assert not [p for p in final["problems"] if "killed" in p], final["problems"]
    return final


def test_down_ends_a_spout_that_waits_for_its_source(duck: Clusterduck) -> None:
    name = duck.name("idle")
    started = duck.up("held", name, env={"LC_END": str(duck.tmp / "never")})
    assert started.returncode == 0, started.stderr
    # Before: the spout never came back to dispatch, so the drain waited the whole 30 s
    # and killed every process ("killed after the 30 s drain timeout").
    final = _down_once_through(duck, name, 100)
    assert [r["state"] for c in final["components"] for r in c["instances"]] == ["finished"] * 3
    assert instance(final, "sink")["received"] == 100
    assert not duck.leftovers(name)
    log = duck.run("logs", name, "source")
    assert "did not call dispatch within 5 s of the graceful down" in log.stdout + log.stderr


def test_nothing_shows_in_flight_once_an_idle_topology_processed_everything(
    duck: Clusterduck,
) -> None:
    """A receiver tells its senders how far it got even when no further frame comes to
    carry the grant: before, an edge whose last grant was not due yet (over half the
    share left) showed 34 messages in flight for as long as the spout stayed idle."""
    name = duck.name("settled")
    started = duck.up("held", name, env={"LC_END": str(duck.tmp / "never")})
    assert started.returncode == 0, started.stderr

    def settled() -> dict[str, Any] | None:
        status = duck.status(name)
        if instance(status, "sink")["received"] != 100:
            return None
        edges = [e for c in ("source", "relay") for e in instance(status, c)["edges"]]
        return status if edges and all(e["in_flight"] == 0 for e in edges) else None

    wait_until(settled, what="every edge to show nothing in flight")
    assert duck.down(name).returncode == 0


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_down_ends_an_async_spout_that_awaits_a_thread(duck: Clusterduck, start: str) -> None:
    """An async spout that reads a blocking source through ``asyncio.to_thread`` (the
    usual way) is left behind after the grace, and its process still exits: an ordinary
    interpreter exit joined the executor's thread (120 s here), so the supervisor waited
    for it, `down` swept the supervisor, and the run folder had no final.json."""
    name = duck.name(f"athread-{start}")
    (duck.tmp / "athread_parts.py").write_text(
        "import asyncio, time\n"
        "\n"
        "async def ten_then_block(dispatch):\n"
        "    for i in range(10):\n"
        "        await dispatch(i, i)\n"
        "    await asyncio.to_thread(time.sleep, 120)\n"
        "\n"
        "def keep(value):\n"
        "    return value\n"
    )
    topology = duck.tmp / f"athread-{start}.yaml"
    topology.write_text(
        f"name: {name}\n"
        f"code: {duck.tmp}\n"
        "spouts:\n"
        "  - {name: source, entry: 'athread_parts:ten_then_block'}\n"
        "workers:\n"
        "  - {name: sink, entry: 'athread_parts:keep', inputs: [source]}\n"
    )
    env = {"CLUSTERDUCK_START": start}
    assert duck.run("up", str(topology), env=env).returncode == 0
    duck.names.append(name)
    _down_once_through(duck, name, 10)
    run_dir = Path(duck.record(name)["hosts"]["localhost"]["run_dir"])
    assert (run_dir / "final.json").exists()
    assert not duck.leftovers(name)

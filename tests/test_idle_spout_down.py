"""A graceful ``down`` of a spout that waits for its source (it sleeps or blocks between
messages and so never calls ``dispatch``, which is where a down ends a spout) drains and
exits instead of waiting out ``--timeout`` and being killed.

Real processes through the CLI (``lifecycle_fixtures``): ``held.yaml``'s spout sends 100
ids, then sleeps until a file appears; the test never creates it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle_fixtures import Clusterduck, instance, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_down_ends_a_spout_that_waits_for_its_source(duck: Clusterduck) -> None:
    name = duck.name("idle")
    started = duck.up("held", name, env={"LC_END": str(duck.tmp / "never")})
    assert started.returncode == 0, started.stderr
    wait_until(
        lambda: instance(duck.status(name), "sink")["received"] == 100,
        what="the 100 ids at the sink",
    )

    stopped = duck.down(name, "--timeout", "20")
    assert stopped.returncode == 0, stopped.stderr
    final = duck.status(name)
    # Before: the spout never came back to dispatch, so the drain waited the whole 20 s
    # and killed every process ("killed after the 20 s drain timeout").
    assert not [p for p in final["problems"] if "killed" in p], final["problems"]
    assert [r["state"] for c in final["components"] for r in c["instances"]] == ["finished"] * 3
    assert instance(final, "sink")["received"] == 100
    assert not duck.leftovers(name)
    log = duck.run("logs", name, "source")
    assert "did not call dispatch within 5 s of the graceful down" in log.stdout + log.stderr

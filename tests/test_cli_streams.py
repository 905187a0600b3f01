"""Where the CLI writes what: ``down``'s summary on stdout (like ``status``'s table), its
notices and warnings on stderr; and a ``logs`` error that lists a wide topology's
components names a few and the closest, not all of them. Real processes through the CLI
(``lifecycle_fixtures``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle_fixtures import TOPOLOGIES, Clusterduck, instance, wait_until
from topology_files import write_topology

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_downs_summary_goes_to_stdout(duck: Clusterduck) -> None:
    """``clusterduck down NAME > summary.txt`` keeps what it did; before, the summary
    went to stderr and the file stayed empty."""
    name = duck.name("sumout")
    started = duck.up("held", name, env={"LC_END": str(duck.tmp / "never")})
    assert started.returncode == 0, started.stderr
    wait_until(
        lambda: instance(duck.status(name), "sink")["received"] == 100,
        what="the 100 ids at the sink",
    )
    stopped = duck.down(name)
    assert stopped.returncode == 0, stopped.stderr
    summary = f"down {name}: stopped; spouts dispatched 100, sinks received 100"
    assert summary in stopped.stdout, (stopped.stdout, stopped.stderr)
    assert summary not in stopped.stderr
    # A second down has nothing to report but a notice: stderr, stdout stays empty.
    again = duck.down(name)
    assert again.returncode == 0, again.stderr
    assert "is not running" in again.stderr and not again.stdout.strip()


def test_logs_of_an_unknown_component_names_a_few_and_the_closest(duck: Clusterduck) -> None:
    relays = [f"relay{i:02d}" for i in range(14)]
    name, topology = write_topology(
        duck,
        "many",
        TOPOLOGIES,
        ["{name: source, entry: 'lc_parts:count_up', args: {count: 3}}"],
        [f"{{name: {relay}, entry: 'lc_parts:relay', inputs: [source]}}" for relay in relays],
    )
    done = duck.run("up", str(topology), "--wait")
    assert done.returncode == 0, done.stderr
    for args in ((name, "relya12"), ("relya12",)):  # named, and the lone word
        shown = duck.run("logs", *args)
        assert shown.returncode == 1, shown.stdout
        error = shown.stderr
        assert "has no component 'relya12'" in error, error
        assert "did you mean 'relay12'?" in error, error
        assert "and 7 more" in error, error  # 15 components: 8 named
        assert "relay13" not in error, error  # (before: all fifteen, on one line)

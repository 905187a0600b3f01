"""The runtime end to end: real processes, real ZeroMQ sockets, via ``run_processes``.

Each test runs one small topology from ``tests/topologies/`` (its functions live in
``tests/topologies/cases.py``) as a supervisor plus one OS process per instance, exactly
as ``clusterduck up`` starts it, and checks what the sinks returned and what ``status``
counted. Nothing here sleeps to wait: ``run_processes`` and the helpers below poll with
deadlines.
"""

from __future__ import annotations

import collections
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from clusterduck import deploy
from clusterduck.exceptions import RuntimeFault
from clusterduck.loader import TopologyFile, load
from clusterduck.testing import TopologyResult, run_processes

TOPOLOGIES = Path(__file__).resolve().parent / "topologies"
TIMEOUT = 60.0


def topology(name: str, **env: str) -> TopologyFile:
    """Load ``tests/topologies/<name>.yaml`` with ``${VAR}`` taken from ``env``."""
    return load(TOPOLOGIES / f"{name}.yaml", environ={**os.environ, **env})


def run(name: str, **env: str) -> TopologyResult:
    result = run_processes(topology(name, **env), timeout=TIMEOUT)
    assert result.status.to_dict()["state"] == "finished", result.status
    return result


def instances(result: TopologyResult, component: str) -> list[dict[str, Any]]:
    for comp in result.status.to_dict()["components"]:
        if comp["name"] == component:
            return comp["instances"]
    raise AssertionError(f"no component {component!r} in status: {result.status}")


def total(result: TopologyResult, component: str, counter: str) -> int:
    return sum(inst[counter] for inst in instances(result, component))


def anomalies(result: TopologyResult) -> dict[str, dict[str, int]]:
    """Every non-empty anomaly counter, per instance."""
    found = {}
    for comp in result.status.to_dict()["components"]:
        for inst in comp["instances"]:
            if any(inst["anomalies"].values()):
                found[f"{comp['name']}/{inst['index']}"] = inst["anomalies"]
    return found


# -- the data model -----------------------------------------------------------------------


def test_wordcount_counts_equal_counter(tmp_path: Path) -> None:
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(60)]
    lines = [" ".join(rng.choices(vocabulary, k=rng.randint(0, 12))) for _ in range(400)]
    words = tmp_path / "words.txt"
    words.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = collections.Counter(w for line in lines for w in line.split())

    result = run("wordcount", WORDS=str(words))

    pairs = result.values("collect")
    highest: dict[str, int] = {}
    seen_counts: dict[str, list[int]] = collections.defaultdict(list)
    for word, n in pairs:
        highest[word] = max(highest.get(word, 0), n)
        seen_counts[word].append(n)
    assert highest == dict(expected)
    # Grouped by key, one counter saw each word: its running counts are exactly 1..n.
    assert {w: sorted(ns) for w, ns in seen_counts.items()} == {
        w: list(range(1, n + 1)) for w, n in expected.items()
    }
    assert total(result, "split", "received") == len(lines)


def test_original_example_bundled_and_sequential() -> None:
    result = run("bundled")

    assert result.outputs["ordered"] == [(i, (f"left-{i}", f"right-{i}")) for i in range(1000)]
    assert total(result, "ordered", "received") == 2000
    assert total(result, "ordered", "emitted") == 1000
    assert anomalies(result) == {}


def test_diamond_join() -> None:
    result = run("diamond")

    joined = sorted(result.outputs["joined"])
    assert joined == [(i, (2 * i, i + 1)) for i in range(2000)]
    assert anomalies(result) == {}


def test_parallelism_each_message_once_and_several_instances_busy() -> None:
    result = run("parallel")

    values = result.values("work")
    assert sorted(v for v, _ in values) == list(range(20000))
    received = [inst["received"] for inst in instances(result, "work")]
    assert sum(received) == 20000
    assert sum(1 for r in received if r > 0) > 1, received
    # What each instance says it received matches what it tagged.
    tagged = collections.Counter(index for _, index in values)
    assert [tagged[i] for i in range(3)] == received


def test_key_grouping_each_key_on_one_instance() -> None:
    result = run("keyed")

    values = result.values("by_key")
    assert sorted(i for (_, i), _ in values) == list(range(3000))
    where: dict[str, set[int]] = collections.defaultdict(set)
    for (key, _), index in values:
        where[key].add(index)
    assert len(where) == 40
    assert all(len(indexes) == 1 for indexes in where.values()), where
    assert len(set().union(*where.values())) > 1  # 40 keys do not all hash alike


def test_fan_out_every_component_gets_every_message() -> None:
    result = run("fanout")

    assert sorted(result.outputs["same"]) == [(i, i) for i in range(3000)]
    assert sorted(result.outputs["doubled"]) == [(i, 2 * i) for i in range(3000)]


def test_errors_are_counted_and_the_rest_arrives() -> None:
    result = run("errors")

    assert sorted(result.values("flaky")) == [i for i in range(1000) if i % 10]
    (flaky,) = instances(result, "flaky")
    assert flaky["errors"] == 100
    assert flaky["received"] == 1000
    assert flaky["emitted"] == 900
    assert "ValueError" in (flaky["last_error"] or "")


def test_generator_none_and_class_with_args_and_close(tmp_path: Path) -> None:
    closed = tmp_path / "closed.txt"

    result = run("shapes", CLOSE_OUT=str(closed))

    assert sorted(result.outputs["twice"]) == sorted(
        [(i, i) for i in range(100)] + [(i, 10 * i) for i in range(100)]
    )
    assert sorted(result.outputs["evens"]) == [(i, i) for i in range(0, 100, 2)]
    assert total(result, "evens", "received") == 100
    assert sorted(result.outputs["scaled"]) == [(i, 3 * i) for i in range(100)]
    assert closed.read_text(encoding="utf-8") == "seen=100 closed=1\n"


def test_async_spout() -> None:
    result = run("async")

    assert sorted(result.outputs["same"]) == [(i, 3 * i) for i in range(500)]
    (spout,) = instances(result, "numbers")
    assert spout["emitted"] == 500


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
def test_serializer_end_to_end(serializer: str) -> None:
    tf = topology("serializer", SERIALIZER=serializer)
    assert tf.topology.settings.serializer == serializer

    result = run_processes(tf, timeout=TIMEOUT)

    assert result.status.to_dict()["state"] == "finished"
    got = sorted(result.outputs["annotated"], key=lambda pair: pair[0])
    # Both codecs turn tuples into lists; everything else survives as it was.
    assert got == [
        (
            i,
            {
                "id": i,
                "name": f"r{i}",
                "tags": ["a", "b"][: i % 3],
                "w": i / 4,
                "none": None,
                "seen": True,
                "pair": [i, f"r{i}"],
            },
        )
        for i in range(50)
    ]


def test_gap_timeout_skips_a_missing_id_while_the_stream_is_open(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    result = run("gap", MARKER=str(marker))

    expected = [(i, i) for i in range(10)] + [(11, 11)]
    expected += [(i, [i, "after-marker"]) for i in range(12, 20)]
    # pickle keeps tuples; compare the tail as lists to keep one expected shape.
    got = [(seq, list(v) if isinstance(v, tuple) else v) for seq, v in result.outputs["ordered"]]
    assert got == expected  # in order, 10 skipped, and 11 ran before the spout went on
    (ordered,) = instances(result, "ordered")
    assert ordered["anomalies"].get("gap_skipped") == 1


# -- on_error: stop ----------------------------------------------------------------------


def test_on_error_stop_fails_the_topology_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor side: the topology ends by itself, in state failed."""
    monkeypatch.setenv("CLUSTERDUCK_HOME", str(tmp_path / "home"))
    record = deploy.start(topology("stop"))
    try:
        deadline = time.monotonic() + TIMEOUT
        status = deploy.topology_status(record).to_dict()
        while status["state"] not in ("finished", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)  # polling with a deadline, not waiting blind
            status = deploy.topology_status(record).to_dict()
    finally:
        cluster = deploy.Cluster(record)
        cluster.stop(timeout=5, force=True)
        cluster.close()
    assert status["state"] == "failed"
    fragile = next(c for c in status["components"] if c["name"] == "fragile")["instances"][0]
    assert fragile["errors"] == 1
    assert "five is fatal" in (fragile["last_error"] or "")


def test_on_error_stop_ends_run_processes_with_state_failed() -> None:
    """``run_processes`` must come back with the failed status (not wait for its timeout)."""
    try:
        result = run_processes(topology("stop"), timeout=10)
    except RuntimeFault as exc:
        pytest.fail(f"run_processes did not notice the failed topology: {exc}")
    assert result.status.to_dict()["state"] == "failed"
    (fragile,) = instances(result, "fragile")
    assert fragile["errors"] == 1
    assert set(result.values("fragile")) <= set(range(5))  # nothing from 5 on


# -- errors outside the worker function, and topologies that cannot finish --------------


def test_a_raising_key_function_drops_only_its_messages() -> None:
    result = run("badkey")

    got = result.values("by_key")
    assert sorted(v[1] for v in got) == [i for i in range(400) if i % 40 != 7]
    (pairs,) = instances(result, "pairs")
    assert pairs["errors"] == 10  # counted by the sender, whose routing raised
    assert "KeyError" in (pairs["last_error"] or "")


def test_a_raising_key_function_at_a_spout_under_on_error_stop_fails_the_topology() -> None:
    """Whichever of the spout's threads routes the message, the process ends (and the
    user's spout never sees the error)."""
    result = run_processes(topology("badkey_stop"), timeout=TIMEOUT)
    assert result.status.to_dict()["state"] == "failed"
    (pairs,) = instances(result, "pairs")
    assert pairs["errors"] == 1
    assert "k7 has no home" in (pairs["last_error"] or "")
    assert all(v[1] < 7 for v in result.values("by_key"))


def test_an_unencodable_result_drops_only_that_message() -> None:
    result = run("unencodable")

    assert sorted(result.values("sink")) == [i for i in range(500) if i % 10]
    (odd,) = instances(result, "odd")
    assert odd["errors"] == 50
    assert odd["emitted"] == 450  # a value that did not encode was never emitted
    assert "set" in (odd["last_error"] or "")


def test_a_bundled_input_that_runs_ahead_forever_does_not_stall() -> None:
    # Far more odd ids than a bundled worker holds before it pauses an input, and than
    # the sockets between the processes can buffer.
    count = 300_000
    result = run("filtered_diamond", COUNT=str(count))

    assert sorted(result.outputs["joined"]) == [(i, i) for i in range(0, count, 2)]
    (joined,) = instances(result, "joined")
    never_complete = joined["anomalies"].get("incomplete_bundle", 0) + joined["anomalies"].get(
        "bundle_overflow", 0
    )
    assert never_complete == count // 2  # every odd id, counted once, memory bounded


def test_an_instance_that_keeps_crashing_fails_the_topology() -> None:
    result = run_processes(topology("crashing"), timeout=TIMEOUT)

    assert result.status.to_dict()["state"] == "failed"
    (doomed,) = instances(result, "doomed")
    assert doomed["restarts"] == 5
    assert doomed["state"] == "crashed"
    assert "gave up" in (doomed["last_error"] or "")


def test_a_restarted_worker_learns_that_its_input_already_ended(tmp_path: Path) -> None:
    marker = tmp_path / "crashed.txt"
    result = run("crash_once", MARKER=str(marker))  # asserts the state is "finished"

    assert marker.exists()
    (fragile,) = instances(result, "fragile")
    assert fragile["restarts"] == 1
    # What the dead process held is lost (docs/reference.md §6); nothing arrives twice.
    values = result.values("fragile")
    assert len(values) == len(set(values)) and set(values) <= set(range(10))

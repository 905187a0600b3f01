"""The same semantics as test_runtime_processes.py, quickly, through ``run_inprocess``:
no sockets and no processes, the same bundling, sequencing, routing and error counting."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

from clusterduck.loader import TopologyFile, load
from clusterduck.testing import TopologyResult, run_inprocess

TOPOLOGIES = Path(__file__).resolve().parent / "topologies"


def topology(name: str, **env: str) -> TopologyFile:
    return load(TOPOLOGIES / f"{name}.yaml", environ={**os.environ, **env})


def instances(result: TopologyResult, component: str) -> list[dict[str, Any]]:
    for comp in result.status.to_dict()["components"]:
        if comp["name"] == component:
            return comp["instances"]
    raise AssertionError(f"no component {component!r} in status: {result.status}")


def test_bundled_sequential_joins_in_id_order() -> None:
    result = run_inprocess(topology("bundled"))

    assert result.outputs["ordered"] == [(i, (f"left-{i}", f"right-{i}")) for i in range(1000)]
    (ordered,) = instances(result, "ordered")
    assert (ordered["received"], ordered["emitted"], ordered["anomalies"]) == (2000, 1000, {})


def test_diamond_join() -> None:
    result = run_inprocess(topology("diamond"))

    assert sorted(result.outputs["joined"]) == [(i, (2 * i, i + 1)) for i in range(2000)]


def test_key_grouping_routes_by_key() -> None:
    result = run_inprocess(topology("keyed"))

    per_instance = [inst["received"] for inst in instances(result, "by_key")]
    assert sum(per_instance) == 3000
    assert sum(1 for n in per_instance if n) > 1, per_instance
    values = result.values("by_key")
    assert sorted(i for (_, i), _ in values) == list(range(3000))


def test_key_grouping_context_index_inside_workers() -> None:
    """``clusterduck.context()`` called by a worker names the instance running it."""
    result = run_inprocess(topology("keyed"))

    where: dict[str, set[int]] = collections.defaultdict(set)
    for (key, _), index in result.values("by_key"):
        where[key].add(index)
    assert all(len(indexes) == 1 for indexes in where.values()), where
    tagged = collections.Counter(index for _, index in result.values("by_key"))
    assert [tagged[i] for i in range(3)] == [
        inst["received"] for inst in instances(result, "by_key")
    ]


def test_wordcount(tmp_path: Path) -> None:
    lines = ["a b a", "c a b", "", "b b"]
    words = tmp_path / "words.txt"
    words.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run_inprocess(topology("wordcount", WORDS=str(words)))

    highest: dict[str, int] = {}
    for word, n in result.values("collect"):
        highest[word] = max(highest.get(word, 0), n)
    assert highest == dict(collections.Counter(" ".join(lines).split()))


def test_errors_are_counted() -> None:
    result = run_inprocess(topology("errors"))

    assert sorted(result.values("flaky")) == [i for i in range(1000) if i % 10]
    (flaky,) = instances(result, "flaky")
    assert (flaky["received"], flaky["emitted"], flaky["errors"]) == (1000, 900, 100)


def test_generator_none_and_close(tmp_path: Path) -> None:
    closed = tmp_path / "closed.txt"

    result = run_inprocess(topology("shapes", CLOSE_OUT=str(closed)))

    assert len(result.outputs["twice"]) == 200
    assert sorted(result.outputs["evens"]) == [(i, i) for i in range(0, 100, 2)]
    assert sorted(result.outputs["scaled"]) == [(i, 3 * i) for i in range(100)]
    assert closed.read_text(encoding="utf-8") == "seen=100 closed=1\n"


def test_async_spout() -> None:
    result = run_inprocess(topology("async"))

    assert sorted(result.outputs["same"]) == [(i, 3 * i) for i in range(500)]

"""`graph` drawings: every component in every format, layered text, valid dot and mermaid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterduck.graph import FORMATS, render
from clusterduck.loader import load
from clusterduck.topology import Topology

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))

WIDE = Topology.model_validate(
    {
        "name": "wide",
        "hosts": {"edge1": {"address": "e1"}},
        "spouts": [{"name": "a", "entry": "m:s"}, {"name": "b", "entry": "m:s", "host": "edge1"}],
        "workers": [
            {"name": "c", "entry": "m:f", "inputs": ["a"]},
            {"name": "d", "entry": "m:f", "inputs": ["a", "b"], "bundle": True},
            {"name": "e", "entry": "m:f", "inputs": ["c", "d"], "bundle": True, "sequential": True},
            {
                "name": "f",
                "entry": "m:f",
                "inputs": ["e", "a", "b"],
                "bundle": True,
                "parallelism": 3,
                "host": ["edge1", "localhost"],
            },
            {"name": "g", "entry": "m:f", "inputs": ["b"], "grouping": "all", "parallelism": 2},
        ],
    }
)


def example(name: str) -> Topology:
    return load(EXAMPLES / f"{name}.yaml", import_entries=False).topology


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_component_in_every_format(path: Path, fmt: str) -> None:
    topology = load(path, import_entries=False).topology
    drawing = render(topology, fmt)
    for comp in topology.components:
        assert comp.name in drawing
    assert drawing.endswith("\n")


def test_text_is_layered_with_boxes_and_arrows() -> None:
    text = render(example("wordcount"), "text")
    rows = text.splitlines()
    assert rows[0] == "wordcount: 4 components, 6 instances, 1 host (localhost)"
    row_of = {
        name: next(i for i, r in enumerate(rows) if f"│ {name} " in r)
        for name in ("lines", "split", "count", "top")
    }
    assert row_of["lines"] < row_of["split"] < row_of["count"] < row_of["top"]
    assert text.count("▼") == 3 and text.count("┌") == 4
    assert "spout ×1" in text and "worker ×2" in text and "grouping: key" in text


def test_text_joins_bundle_inputs_and_routes_long_edges() -> None:
    text = render(WIDE, "text")
    assert "┴" in text or "┬" in text  # two streams meet
    rows = text.splitlines()
    drawing = rows[2:]
    assert len({len(r.rstrip()) for r in drawing}) > 1  # trailing spaces stripped
    for name in "abcdefg":
        assert any(f"│ {name} " in r for r in drawing)
    assert "@ edge1, localhost" in text and "bundle · sequential" in text
    assert "grouping: all" in text and "worker ×3" in text
    # f is on the deepest layer, below e even though it also reads the spouts directly
    assert next(i for i, r in enumerate(rows) if "│ f " in r) > next(
        i for i, r in enumerate(rows) if "│ e " in r
    )


def test_dot_edges_and_bundle_order() -> None:
    dot = render(WIDE, "dot")
    assert dot.startswith('digraph "wide" {') and dot.rstrip().endswith("}")
    assert '"a" -> "c";' in dot
    assert '"e" -> "f" [label="1"];' in dot and '"b" -> "f" [label="3"];' in dot
    assert dot.count("->") == sum(len(w.inputs) for w in WIDE.workers)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_dot_renders_with_graphviz() -> None:
    done = subprocess.run(
        ["dot", "-Tsvg"],
        input=render(WIDE, "dot"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_mermaid_is_a_fenced_flowchart() -> None:
    mermaid = render(example("bundled"), "mermaid")
    lines = mermaid.splitlines()
    assert lines[0] == "```mermaid" and lines[-1] == "```" and "flowchart TD" in lines
    assert '    n0(["left<br/>spout ×1<br/>@ localhost"])' in lines
    assert "    n0 -->|1| n2" in lines and "    n1 -->|2| n2" in lines


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, dot, mermaid"):
        render(WIDE, "svg")


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    spouts = draw(st.integers(1, 3))
    total = draw(st.integers(spouts, 9))
    names = [f"node-{i}" for i in range(total)]
    workers = [
        {
            "name": names[i],
            "entry": "m:f",
            "parallelism": draw(st.integers(1, 3)),
            "inputs": [
                names[j]
                for j in draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3, unique=True))
            ],
        }
        for i in range(spouts, total)
    ]
    return Topology.model_validate(
        {
            "name": "random",
            "workers": workers,
            "spouts": [{"name": n, "entry": "m:s"} for n in names[:spouts]],
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_random_dags_render(topology: Topology) -> None:
    for fmt in FORMATS:
        drawing = render(topology, fmt)
        for comp in topology.components:
            assert comp.name in drawing
    text = render(topology, "text")
    edges = sum(len(w.inputs) for w in topology.workers)
    assert text.count("▼") >= len(topology.workers) and edges >= len(topology.workers)


def test_the_guarantee_is_named_only_when_it_is_at_least_once() -> None:
    path = Path(__file__).resolve().parent / "guarantee_topologies" / "chain.yaml"
    topology = load(path, environ={"GD_OUT": "/dev/null"}).topology
    assert ", at-least-once (message_timeout 20s)" in render(topology, "text").splitlines()[0]
    assert "once" not in render(example("wordcount"), "text").splitlines()[0]

"""Bounded YAML (issue 10): hostile files are refused quickly, with a located error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, WriteTopology
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.exceptions import Problem, TopologyError
from clusterduck.loader import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, _expanded_size, load

LAUGHS = (
    "\n".join(
        ["name: laughs", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [
            f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ]
    )
    + "\n"
)


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(TopologyError) as info:
        load(path, import_entries=False)
    return info.value.problems


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clusterduck", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def test_billion_laughs_is_refused_at_the_alias(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    done = validate(path)
    assert done.returncode == 1 and done.stdout == ""
    # aliases on lines 3-5 add 90 + 819 + 7,380 nodes; the first one on line 6 (*d, 7,381
    # nodes) crosses 10,000
    assert done.stderr.startswith(f"{path}:6:8: YAML aliases expand past 10,000 nodes\n")
    assert "billion laughs" in done.stderr


def test_a_50_mb_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    line = b'  - {name: s, entry: "m:f"}\n'
    with path.open("wb") as out:
        out.write(b"name: huge\nspouts:\n")
        out.write(line * (50 * 1024 * 1024 // len(line)))
    done = validate(path)
    assert done.returncode == 1 and done.stdout == ""
    size = path.stat().st_size
    assert done.stderr.startswith(
        f"{path}: the file is {size:,} bytes, more than the {MAX_FILE_BYTES:,}-byte limit"
    )


def test_a_file_at_the_size_limit_is_read(write_topology: WriteTopology) -> None:
    head = 'name: big\nspouts: [{name: s, entry: "m:f"}]\n'
    path = write_topology(head + "#" * (MAX_FILE_BYTES - len(head) - 1) + "\n")
    assert path.stat().st_size == MAX_FILE_BYTES
    assert load(path, import_entries=False).topology.name == "big"
    path.write_text(path.read_text() + "\n")
    assert "limit" in problems_of(path)[0].message


def _aliases(count: int) -> str:
    items = ", ".join(["1"] * 99)  # the anchored list is 100 nodes
    return (
        f'name: many\nspouts:\n  - name: s\n    entry: "m:f"\n'
        f"    args:\n      base: &l [{items}]\n      more: [{', '.join(['*l'] * count)}]\n"
    )


def test_alias_budget_boundary(write_topology: WriteTopology) -> None:
    assert MAX_ALIAS_NODES == 10_000
    path = write_topology(_aliases(100))
    more = load(path, import_entries=False).topology.spouts[0].args["more"]
    assert len(more) == 100 and all(len(x) == 99 for x in more)
    path = write_topology(_aliases(101))
    problem = problems_of(path)[0]
    assert (problem.line, problem.message) == (7, "YAML aliases expand past 10,000 nodes")
    assert problem.column == 14 + 4 * 100  # the 101st alias


def test_merge_keys_and_small_aliases_still_work(write_topology: WriteTopology) -> None:
    path = write_topology("""
        name: merged
        spouts:
          - &base {name: s, entry: "m:f", args: {path: a.txt}}
          - <<: *base
            name: t
        """)
    spouts = load(path, import_entries=False).topology.spouts
    assert [(s.name, s.args) for s in spouts] == [
        ("s", {"path": "a.txt"}),
        ("t", {"path": "a.txt"}),
    ]


def test_deep_nesting_is_refused(write_topology: WriteTopology) -> None:
    path = write_topology("name: deep\nargs: " + "[" * 5000 + "]" * 5000 + "\n")
    problem = problems_of(path)[0]
    assert problem.message == f"YAML nested deeper than {MAX_DEPTH} levels"
    assert (problem.line, problem.column) == (2, 6 + MAX_DEPTH)  # the 65th level


def test_a_long_alias_chain_is_refused_not_a_recursion_error(write_topology: WriteTopology) -> None:
    lines = ["name: chain", "x0: &x0 [1]"] + [f"x{i}: &x{i} [*x{i - 1}]" for i in range(1, 3000)]
    problem = problems_of(write_topology("\n".join(lines) + "\n"))[0]
    # root, x62, x61 … x0 and its scalar: 65 levels
    assert "deeper than" in problem.message and problem.line == MAX_DEPTH


def test_recursive_alias_is_still_reported(write_topology: WriteTopology) -> None:
    path = write_topology('name: r\nspouts:\n  - &s {name: a, entry: "m:f", args: {x: *s}}\n')
    assert any(p.message == "recursive YAML alias" for p in problems_of(path))


def _count(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count(k) + _count(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


@st.composite
def alias_documents(draw: st.DrawFn) -> str:
    """Anchored lists of scalars and aliases to earlier anchors, as a YAML mapping."""
    lines: list[str] = []
    for i in range(draw(st.integers(1, 6))):
        items = draw(st.lists(st.integers(-1, i - 1), max_size=4))
        body = ", ".join("0" if j < 0 else f"*a{j}" for j in items)
        lines.append(f"k{i}: &a{i} [{body}]")
    return "\n".join(lines) + "\n"


@given(alias_documents())
@settings(max_examples=200, deadline=None)
def test_expanded_size_counts_what_expansion_builds(text: str) -> None:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    size, _ = _expanded_size(node, {})
    assert size == min(_count(yaml.safe_load(text)), MAX_ALIAS_NODES + 1)

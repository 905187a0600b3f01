"""Graph and entry rules (docs/reference.md §2): every rejection located, all of them in one run."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from conftest import WriteTopology
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterduck.entries import EntryError, positional_arity, resolve_entry
from clusterduck.exceptions import Problem, TopologyError
from clusterduck.loader import load
from clusterduck.validation import check_topology

MOD = """
    def source(dispatch, **args):
        pass

    def fn(value):
        return value

    def pair(a, b):
        return a, b

    def many(*values):
        return values

    class Join:
        def __init__(self, scale=1):
            self.scale = scale

        def __call__(self, a, b, c):
            return a

    class Mute:
        pass

    class Scale:
        def __init__(self, scale=1):
            self.scale = scale

        def __call__(self, value):
            return value * self.scale

    NOT_CALLABLE = 42
    """
MODULES = {"vmod": MOD, "broken": "def oops(:\n", "needsdep": "import not_installed_xyz\n"}


def problems(write_topology: WriteTopology, text: str, **kwargs: object) -> list[Problem]:
    path = write_topology(text, MODULES)
    with pytest.raises(TopologyError) as info:
        load(path, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def one(write_topology: WriteTopology, workers: str, spouts: str = "", hosts: str = "") -> Problem:
    """The single problem of a file with spout ``src`` plus the given YAML fragments."""
    text = (
        "name: t\n"
        + textwrap.dedent(hosts)
        + "spouts:\n- {name: src, entry: vmod:source}\n"
        + textwrap.dedent(spouts)
        + "workers:\n"
        + textwrap.dedent(workers)
    )
    found = problems(write_topology, text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


# Each case: the workers: fragment (its first line is line 5 of the file), expected
# (line, component, message fragment).
CASES = {
    "duplicate name": (
        """\
        - {name: a, entry: vmod:fn, inputs: [src]}
        - {name: a, entry: vmod:fn, inputs: [src]}
        """,
        (6, "a", "duplicate name 'a'"),
    ),
    "duplicate of a spout": (
        """\
        - {name: src, entry: vmod:fn, inputs: [src]}
        """,
        (5, "src", "duplicate name 'src'"),
    ),
    "invalid name": (
        """\
        - {name: Bad Name, entry: vmod:fn, inputs: [src]}
        """,
        (5, "Bad Name", "invalid name 'Bad Name'"),
    ),
    "unknown input": (
        """\
        - name: a
          entry: vmod:fn
          inputs: [src, scr]
        """,
        (7, "a", "input 'scr' names no spout or worker"),
    ),
    "self loop": (
        """\
        - {name: a, entry: vmod:fn, inputs: [a]}
        """,
        (5, "a", "cycle: a → a"),
    ),
    "parallelism below 1": (
        """\
        - {name: a, entry: vmod:fn, inputs: [src], parallelism: -1}
        """,
        (5, "a", "parallelism must be at least 1"),
    ),
    "no inputs": (
        """\
        - {name: a, entry: vmod:fn, inputs: []}
        """,
        (5, "a", "a worker needs at least one input"),
    ),
    "sequential multi-input": (
        """\
        - {name: b, entry: vmod:fn, inputs: [src]}
        - name: a
          entry: vmod:fn
          inputs: [src, b]
          sequential: true
        """,
        (9, "a", "sequential on a worker with several inputs"),
    ),
    "sequential parallel": (
        """\
        - name: a
          entry: vmod:fn
          inputs: [src]
          parallelism: 2
          sequential: true
        """,
        (9, "a", "sequential needs parallelism: 1"),
    ),
    "grouping key without key": (
        """\
        - name: a
          entry: vmod:fn
          inputs: [src]
          grouping: key
        """,
        (8, "a", "grouping: key without key:"),
    ),
    "key without grouping key": (
        """\
        - {name: a, entry: vmod:fn, inputs: [src], key: vmod:fn}
        """,
        (5, "a", "key: is only used with grouping: key"),
    ),
    "bundle arity function": (
        """\
        - name: a
          entry: vmod:pair
          inputs: [src]
          bundle: true
        """,
        (6, "a", "bundled worker has 1 inputs but vmod:pair takes 2"),
    ),
    "bundle arity class": (
        """\
        - {name: b, entry: vmod:fn, inputs: [src]}
        - name: a
          entry: vmod:Join
          inputs: [src, b]
          bundle: true
        """,
        (7, "a", "bundled worker has 2 inputs but vmod:Join takes 3"),
    ),
    "entry syntax error": (
        """\
        - {name: a, entry: broken:oops, inputs: [src]}
        """,
        (5, "a", "importing 'broken' failed (broken.py:1): SyntaxError"),
    ),
    "entry dependency missing": (
        """\
        - {name: a, entry: needsdep:x, inputs: [src]}
        """,
        (5, "a", "No module named 'not_installed_xyz'"),
    ),
    "entry module missing": (
        """\
        - {name: a, entry: nosuchmodule:x, inputs: [src]}
        """,
        (5, "a", "no module 'nosuchmodule'"),
    ),
    "entry attribute missing": (
        """\
        - {name: a, entry: vmod:fm, inputs: [src]}
        """,
        (5, "a", "'vmod' has no attribute 'fm'"),
    ),
    "entry not callable": (
        """\
        - {name: a, entry: vmod:NOT_CALLABLE, inputs: [src]}
        """,
        (5, "a", "is a int, not a function or class"),
    ),
    "entry malformed": (
        """\
        - {name: a, entry: vmod.fn, inputs: [src]}
        """,
        (5, "a", "entry 'vmod.fn' is not module:attr"),
    ),
    "class instances not callable": (
        """\
        - {name: a, entry: vmod:Mute, inputs: [src]}
        """,
        (5, "a", "instances of Mute are not callable"),
    ),
    "class args mismatch": (
        """\
        - name: a
          entry: vmod:Scale
          inputs: [src]
          args: {scael: 2}
        """,
        (8, "a", "vmod:Scale(**args) fails"),
    ),
    "plain worker arity": (
        """\
        - {name: a, entry: vmod:pair, inputs: [src]}
        """,
        (5, "a", "vmod:pair cannot be called with value"),
    ),
    "key not importable": (
        """\
        - {name: a, entry: vmod:fn, inputs: [src], grouping: key, key: vmod:nokey}
        """,
        (5, "a", "'vmod' has no attribute 'nokey'"),
    ),
    "key not callable": (
        """\
        - {name: a, entry: vmod:fn, inputs: [src], grouping: key, key: vmod:NOT_CALLABLE}
        """,
        (5, "a", "not a function or class"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rejection_is_located(write_topology: WriteTopology, case: str) -> None:
    workers, (line, component, message) = CASES[case]
    problem = one(write_topology, workers)
    assert (problem.line, problem.component) == (line, component), str(problem)
    assert message in problem.message, str(problem)
    assert problem.hint and "\n" not in problem.hint


def test_args_a_function_does_not_take_get_the_signature_to_write(
    write_topology: WriteTopology,
) -> None:
    """A function worker gets ``args`` as keywords: the hint shows the def that takes them."""
    problem = one(write_topology, "- {name: a, entry: vmod:fn, inputs: [src], args: {factor: 2}}\n")
    assert "vmod:fn cannot be called with value, **args" in problem.message, str(problem)
    assert "def fn(value, factor)" in problem.hint, problem.hint


def test_cycle_is_reported_once_naming_every_member(write_topology: WriteTopology) -> None:
    problem = one(
        write_topology,
        """\
        - {name: a, entry: vmod:pair, inputs: [src, c], bundle: true}
        - {name: b, entry: vmod:fn, inputs: [a]}
        - {name: c, entry: vmod:fn, inputs: [b]}
        - {name: d, entry: vmod:fn, inputs: [c]}
        """,
    )
    assert (problem.line, problem.column, problem.component) == (5, 31, "a")
    assert problem.message == "cycle: a → b → c → a"
    assert "a, b, c" in problem.hint


def test_spout_with_inputs(write_topology: WriteTopology) -> None:
    problem = one(
        write_topology,
        "- {name: a, entry: vmod:fn, inputs: [src]}\n",
        spouts="""\
        - name: other
          entry: vmod:source
          inputs: [src]
        """,
    )
    assert (problem.line, problem.component) == (6, "other")
    assert problem.message == "a spout takes no inputs"


def test_undeclared_host(write_topology: WriteTopology) -> None:
    problem = one(
        write_topology,
        """\
        - {name: a, entry: vmod:fn, inputs: [src], host: [localhost, edge1]}
        """,
        hosts="hosts:\n  edge2: {address: e2}\n",
    )
    assert (problem.line, problem.column, problem.component) == (7, 62, "a")
    assert problem.message == "host 'edge1' is not declared under hosts:"
    assert problem.hint == "did you mean 'edge2'?"


def test_localhost_and_declared_hosts_are_fine(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: t
        hosts: {edge1: {address: e1}}
        spouts: [{name: src, entry: vmod:source, host: edge1}]
        workers: [{name: a, entry: vmod:fn, inputs: [src], host: [localhost, edge1]}]
        """,
        MODULES,
    )
    assert load(path).topology.hosts_used() == ["edge1", "localhost"]


def test_valid_features_pass(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: t
        spouts:
          - {name: src, entry: vmod:source, args: {anything: 1}}
          - {name: src2, entry: vmod:source}
        workers:
          - {name: j, entry: vmod:Join, args: {scale: 2}, inputs: [src, src2, src], bundle: true}
          - {name: m, entry: vmod:many, inputs: [src, src2], bundle: true, sequential: true}
          - {name: k, entry: vmod:fn, inputs: [m], grouping: key, key: vmod:fn, parallelism: 3}
          - {name: all, entry: vmod:fn, inputs: [k], grouping: all, parallelism: 2}
        """,
        MODULES,
    )
    with pytest.raises(TopologyError) as info:
        load(path)
    # listing an input twice is legal for pydantic but certainly a mistake
    assert [p.message for p in info.value.problems] == ["input 'src' is listed twice"]


ALL_AT_ONCE = """\
name: many
spouts:
  - {name: src, entry: vmod:source}
workers:
  - name: a
    entry: vmod:fn
    inputs: [c]
  - name: b
    entry: vmod:fn
    inptus: [src]
  - name: c
    entry: vmod:fn
    inputs: [a, ghost]
  - name: a
    entry: vmod:nothing
    inputs: [src]
    inputs: [src]
  - name: j
    entry: vmod:pair
    inputs: [src, a, c]
    bundle: true
"""

EXPECTED = {
    (7, "cycle: a → c → a"),
    (10, "unknown key 'inptus'"),
    (13, "input 'ghost' names no spout or worker"),
    (14, "duplicate name 'a'"),
    (15, "'vmod' has no attribute 'nothing'"),
    (17, "duplicate key 'inputs'"),
    (19, "bundled worker has 3 inputs but vmod:pair takes 2 positional arguments"),
}


def test_every_problem_in_one_run(write_topology: WriteTopology) -> None:
    found = problems(write_topology, ALL_AT_ONCE)
    assert {(p.line, p.message) for p in found} == EXPECTED
    assert [p.line for p in found] == sorted(p.line or 0 for p in found)


def test_check_topology_on_a_model(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: t
        spouts: [{name: src, entry: vmod:source}]
        workers: [{name: a, entry: vmod:fn, inputs: [src], sequential: true, parallelism: 2}]
        """,
        MODULES,
    )
    with pytest.raises(TopologyError):
        load(path, import_entries=False)
    from clusterduck.topology import Topology

    model = Topology.model_validate(
        {
            "name": "t",
            "spouts": [{"name": "s", "entry": "vmod:source"}],
            "workers": [{"name": "w", "entry": "vmod:fn", "inputs": ["s", "nope"]}],
        }
    )
    assert [p.message for p in check_topology(model, path.parent)] == [
        "input 'nope' names no spout or worker"
    ]


# -- entries -----------------------------------------------------------------------


def test_positional_arity() -> None:
    class Call:
        def __call__(self, a: int, b: int = 0) -> None: ...

    def star(a: int, *rest: int) -> None: ...

    assert positional_arity(lambda a, b, *, c=1: None) == 2
    assert positional_arity(Call) == 2 and positional_arity(Call()) == 2
    assert positional_arity(star) is None


def test_resolve_entry_reimports_per_code_folder(tmp_path: Path) -> None:
    for tag in ("one", "two"):
        folder = tmp_path / tag
        folder.mkdir()
        (folder / "samename.py").write_text(f"def who():\n    return {tag!r}\n")
    for _ in range(2):  # repeatedly, alternating folders
        assert resolve_entry("samename:who", tmp_path / "one")() == "one"  # type: ignore[operator]
        assert resolve_entry("samename:who", tmp_path / "two")() == "two"  # type: ignore[operator]
    assert sys.path[0] == str((tmp_path / "two").resolve())
    assert str((tmp_path / "one").resolve()) not in sys.path
    with pytest.raises(EntryError, match="did you mean samename:who"):
        resolve_entry("samename:how", tmp_path / "two")


# -- property: random DAGs pass, any added back edge is a reported cycle ------------


FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    spouts = draw(st.integers(1, 3))
    total = draw(st.integers(spouts, 9))
    inputs = [[] for _ in range(spouts)]
    for node in range(spouts, total):
        inputs.append(draw(st.lists(st.integers(0, node - 1), min_size=1, max_size=3, unique=True)))
    return spouts, inputs


def write_graph(path: Path, spouts: int, inputs: list[list[int]]) -> None:
    lines = ["name: random", "spouts:"]
    lines += [f"  - {{name: n{i}, entry: m:s}}" for i in range(spouts)]
    lines += ["workers:"] if len(inputs) > spouts else []
    lines += [
        f"  - {{name: n{i}, entry: m:f, inputs: [{', '.join(f'n{j}' for j in ins)}]}}"
        for i, ins in enumerate(inputs)
        if i >= spouts
    ]
    path.write_text("\n".join(lines) + "\n")


def downstream(inputs: list[list[int]], start: int) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        for other, ins in enumerate(inputs):
            if node in ins and other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(dags())
def test_random_dags_validate(tmp_path: Path, dag: tuple[int, list[list[int]]]) -> None:
    spouts, inputs = dag
    write_graph(tmp_path / "dag.yaml", spouts, inputs)
    topology = load(tmp_path / "dag.yaml", import_entries=False).topology
    order = topology.topological_order()
    for worker in topology.workers:
        assert all(order.index(i) < order.index(worker.name) for i in worker.inputs)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(dags().filter(lambda d: len(d[1]) > d[0]), st.data())
def test_random_cycles_are_rejected(
    tmp_path: Path, dag: tuple[int, list[list[int]]], data: st.DataObject
) -> None:
    spouts, inputs = dag
    worker = data.draw(st.integers(spouts, len(inputs) - 1))
    back = data.draw(st.sampled_from(sorted(downstream(inputs, worker))))
    if back not in inputs[worker]:
        inputs[worker] = [*inputs[worker], back]
    write_graph(tmp_path / "cycle.yaml", spouts, inputs)
    with pytest.raises(TopologyError) as info:
        load(tmp_path / "cycle.yaml", import_entries=False)
    found = info.value.problems
    assert found and all(p.message.startswith("cycle: ") for p in found)
    # worker and back are in one loop; its report names every member in the hint
    assert any(f"n{worker}" in p.hint and f"n{back}" in p.hint for p in found)


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_spout_max_pending_must_be_a_positive_count(
    write_topology: WriteTopology, value: str
) -> None:
    problem = one(
        write_topology,
        "- {name: a, entry: vmod:fn, inputs: [src]}\n",
        spouts=f"""\
        - name: other
          entry: vmod:source
          max_pending: {value}
        """,
    )
    assert (problem.line, problem.component) == (6, "other")  # the max_pending line
    assert "max_pending" in problem.message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("guarantee: exactly-once", "guarantee"),
        ("guarantee: at-least-twice", "guarantee"),
        ("message_timeout: 0s", "message_timeout"),
        ("message_timeout: soon", "message_timeout"),
    ],
)
def test_bad_guarantee_settings_are_located(
    write_topology: WriteTopology, line: str, key: str
) -> None:
    text = (
        "name: t\nspouts:\n- {name: src, entry: vmod:source}\nworkers:\n"
        "- {name: a, entry: vmod:fn, inputs: [src]}\nsettings:\n"
        "  on_error: skip\n  " + line + "\n"
    )
    found = problems(write_topology, text)
    assert len(found) == 1, "\n".join(map(str, found))
    assert found[0].line == 8 and key in found[0].message


def test_guarantee_settings_reach_the_runtime(write_topology: WriteTopology) -> None:
    from clusterduck.protocol import TopologySpec

    path = write_topology(
        "name: t\nspouts:\n- {name: src, entry: vmod:source}\nworkers:\n"
        "- {name: a, entry: vmod:fn, inputs: [src]}\nsettings:\n"
        "  guarantee: at-least-once\n  message_timeout: 250ms\n",
        MODULES,
    )
    spec = TopologySpec.from_topology(load(path).topology)
    assert spec.at_least_once and spec.message_timeout == 0.25
    again = TopologySpec.from_dict(spec.to_dict())
    assert again == spec

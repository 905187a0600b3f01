"""YAML reading: positions, duplicate keys, ${VAR}, pydantic errors mapped onto lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import WriteTopology

from clusterduck.exceptions import Problem, TopologyError
from clusterduck.loader import TopologyFile, load

MODULE = {"mod": "def source(dispatch, **args):\n    pass\n\ndef fn(value):\n    return value\n"}


def problems_of(path: Path, **kwargs: object) -> list[Problem]:
    with pytest.raises(TopologyError) as info:
        load(path, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def test_valid_file_gives_absolute_paths(write_topology: WriteTopology, tmp_path: Path) -> None:
    path = write_topology(
        """
        name: ok
        spouts:
          - {name: src, entry: "mod:source"}
        workers:
          - {name: work, entry: "mod:fn", inputs: [src]}
        """,
        MODULE,
    )
    loaded = load(path)
    assert isinstance(loaded, TopologyFile)
    assert loaded.path == path.resolve() and loaded.path.is_absolute()
    assert loaded.code_dir == tmp_path.resolve()
    assert [c.name for c in loaded.topology] == ["src", "work"]


def test_code_dir_is_relative_to_the_file(write_topology: WriteTopology, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mymod.py").write_text("def source(dispatch):\n    pass\n")
    path = write_topology("""
        name: ok
        code: code
        spouts: [{name: src, entry: "mymod:source"}]
        """)
    assert load(path).code_dir == (tmp_path / "code").resolve()


def test_missing_code_folder_is_located(write_topology: WriteTopology) -> None:
    path = write_topology("""
        name: ok
        code: nowhere
        spouts: [{name: src, entry: "mod:source"}]
        """)
    problem = only(problems_of(path))
    assert (problem.line, problem.column) == (2, 7)
    assert "does not exist" in problem.message


def test_yaml_syntax_error_has_parser_position(write_topology: WriteTopology) -> None:
    path = write_topology("""
        name: x
        spouts:
          - name: a
            entry: m:s
            args: {path: [1, 2}
        """)
    problem = only(problems_of(path))
    assert (problem.file, problem.line, problem.column) == (str(path), 5, 23)
    assert problem.message.startswith("YAML syntax error: expected ',' or ']'")


@pytest.mark.parametrize(
    ("last_line", "column", "opener"),
    [
        ("args: {count: 5", 11, "'{'"),
        ("args: [1, 2", 11, "'['"),
        ("entry: 'm:s", 12, "quote"),
    ],
)
def test_unclosed_bracket_or_quote_points_at_the_opener(
    write_topology: WriteTopology, last_line: str, column: int, opener: str
) -> None:
    """PyYAML reports such a file's end (a line past the last one); the opener is the fix."""
    path = write_topology(f"name: x\nspouts:\n  - name: a\n    entry: m:s\n    {last_line}\n")
    problem = only(problems_of(path))
    assert (problem.line, problem.column) == (5, column), problem
    assert f"the {opener} opened here is never closed" in problem.hint, problem.hint


def test_a_wrong_closer_names_where_the_bracket_opened(write_topology: WriteTopology) -> None:
    path = write_topology("name: x\nspouts:\n  - name: a\n    args: {count: 5]\n")
    problem = only(problems_of(path))
    assert (problem.line, problem.column) == (4, 20), problem
    assert "close the '{' opened at line 4, column 11 with '}'" in problem.hint, problem.hint


def test_tab_indentation_hint(write_topology: WriteTopology) -> None:
    path = write_topology("name: x\nspouts:\n\t- name: a\n")
    problem = only(problems_of(path))
    assert problem.line == 3 and "tabs" in problem.hint


def test_duplicate_yaml_key_is_an_error_at_the_duplicate(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts:
          - name: a
            entry: mod:source
            entry: mod:other
        """,
        MODULE,
    )
    problem = only(problems_of(path))
    assert (problem.line, problem.column) == (5, 5)
    assert problem.message == "duplicate key 'entry'"
    assert "line 4" in problem.hint and problem.component == "a"


def test_duplicate_top_level_key(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        name: y
        """,
        MODULE,
    )
    problem = only(problems_of(path))
    assert (problem.line, problem.message) == (3, "duplicate key 'name'")


def test_merge_keys_may_be_overridden(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        workers:
          - &base {name: b, entry: mod:fn, inputs: [a]}
          - <<: *base
            name: c
        """,
        MODULE,
    )
    assert [c.name for c in load(path).topology] == ["a", "b", "c"]


def test_unknown_key_located_at_the_key_with_suggestion(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        workers:
          - name: b
            entry: mod:fn
            inptus: [a]
        """,
        MODULE,
    )
    problem = only(problems_of(path))  # no extra "missing inputs": the typo explains it
    assert (problem.line, problem.column) == (6, 5)
    assert problem.message == "unknown key 'inptus'"
    assert problem.hint == "did you mean 'inputs'?" and problem.component == "b"


def test_unknown_key_in_settings_and_hosts(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        hosts:
          edge: {adress: e.example}
        spouts: [{name: a, entry: mod:source}]
        settings: {serialiser: json}
        """,
        MODULE,
    )
    found = {(p.line, p.message, p.hint) for p in problems_of(path)}
    assert (3, "unknown key 'adress'", "did you mean 'address'?") in found
    assert (5, "unknown key 'serialiser'", "did you mean 'serializer'?") in found


def test_missing_required_key_located_at_its_mapping(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        workers:
          - name: b
            inputs: [a]
        """,
        MODULE,
    )
    problem = only(problems_of(path))
    assert (problem.line, problem.column) == (4, 5)
    assert problem.message == "missing required key 'entry'" and problem.component == "b"


def test_bad_values_located_at_the_value(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        workers:
          - name: b
            entry: mod:fn
            inputs: [a]
            grouping: random
            gap_timeout: soon
        settings:
          serializer: yaml
        """,
        MODULE,
    )
    found = {(p.line, p.column, p.component) for p in problems_of(path)}
    assert found == {(7, 15, "b"), (8, 18, "b"), (10, 15, None)}


@pytest.mark.parametrize("text, message", [("", "the file is empty"), ("- a\n- b\n", "mapping")])
def test_empty_or_non_mapping_file(write_topology: WriteTopology, text: str, message: str) -> None:
    assert message in only(problems_of(write_topology(text))).message


def test_unreadable_file(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path / "missing.yaml"))
    assert problem.line is None and "cannot read" in problem.message


ENV_TOPOLOGY = """
    name: ${NAME:-envtest}
    spouts:
      - name: src
        entry: mod:source
        args: {path: "${DATA}/lines.txt", raw: "$${NOT_A_VAR}", empty: "${EMPTY:-}"}
        parallelism: ${PAR:-2}
    """


def test_env_expansion_from_given_environ(write_topology: WriteTopology) -> None:
    path = write_topology(ENV_TOPOLOGY, MODULE)
    topology = load(path, environ={"DATA": "/srv", "PAR": "3"}).topology
    spout = topology.spouts[0]
    assert topology.name == "envtest"
    assert spout.args == {"path": "/srv/lines.txt", "raw": "${NOT_A_VAR}", "empty": ""}
    assert spout.parallelism == 3


def test_env_defaults_to_os_environ(
    write_topology: WriteTopology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA", "/from-os")
    path = write_topology(ENV_TOPOLOGY, MODULE)
    assert load(path).topology.spouts[0].args["path"] == "/from-os/lines.txt"


def test_unset_variable_is_located_and_not_reported_twice(write_topology: WriteTopology) -> None:
    path = write_topology(ENV_TOPOLOGY, MODULE)
    problem = only(problems_of(path, environ={}))
    assert (problem.line, problem.column) == (5, 18)
    assert problem.message == "${DATA} is not set" and problem.component == "src"
    assert "${DATA:-" in problem.hint


def test_unset_variable_in_entry_hides_the_entry_error(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: "${ENTRY}"}]
        """,
        MODULE,
    )
    problem = only(problems_of(path, environ={}))
    assert (problem.line, problem.message) == (2, "${ENTRY} is not set")


def test_problems_are_in_file_order(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        workers:
          - {name: b, entry: mod:fn, inputs: [zz]}
          - {name: c, entry: mod:fn, inputs: [a], parallelism: 0}
          - {name: d, entry: mod:fn, inputs: [a], nope: 1}
        """,
        MODULE,
    )
    lines = [p.line for p in problems_of(path)]
    assert lines == [4, 5, 6]


def test_non_string_key_is_located(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts: [{name: a, entry: mod:source}]
        3: three
        """,
        MODULE,
    )
    problem = only(problems_of(path))
    assert (problem.line, problem.column, problem.message) == (3, 1, "key 3 is not a string")


def test_a_key_indented_less_is_explained_in_words(write_topology: WriteTopology) -> None:
    path = write_topology("""
        name: x
        spouts:
          - name: a
          entry: m:s
        """)
    problem = only(problems_of(path))
    assert (problem.line, problem.column) == (4, 3)
    assert "'?'" not in problem.message and "found a key" in problem.message, problem
    assert "indented differently from the lines above" in problem.hint


def test_a_key_indented_deeper_is_explained(write_topology: WriteTopology) -> None:
    path = write_topology("""
        name: x
        spouts:
          - name: a
            entry: m:s
             args: {}
        """)
    problem = only(problems_of(path))
    assert problem.line == 5
    assert "indented deeper than the key above" in problem.hint and "quote it" in problem.hint


def test_wrong_types_say_what_to_write(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: x
        spouts:
          - name: a
            entry: mod:source
        workers:
          - name: w
            entry: mod:fn
            inputs: a
            parallelism: four
            sequential: maybe
            grouping: keys
        settings:
          security: off
        """,
        MODULE,
    )
    found = {p.line: p for p in problems_of(path)}
    assert {found[n].component for n in (8, 9, 10, 11)} == {"w"}
    assert found[8].message == "inputs must be a list, not 'a'", found[8]
    assert "inputs: [a]" in found[8].hint
    assert found[9].message == "parallelism must be a whole number, not 'four'"
    assert found[10].message == "sequential must be true or false, not 'maybe'"
    assert "'keys' is not one of shuffle, key, all" in found[11].message
    assert found[11].hint == "did you mean 'key'?"
    assert "security false is not one of auto, curve, none" in found[13].message
    assert "unquoted off/on/no/yes" in found[13].hint

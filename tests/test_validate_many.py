"""`validate` on several files and folders, in its three formats, with and without imports."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from clusterduck.cli import main
from clusterduck.exceptions import Problem
from clusterduck.reports import github_annotation

GOOD = """\
name: {name}
spouts:
  - {{name: src, entry: "parts:source"}}
workers:
  - {{name: double, entry: "parts:double", inputs: [src]}}
"""
BAD = """\
name: bad
spouts:
  - {name: src, entry: "parts:source"}
workers:
  - name: double
    entry: "parts:double"
    inptus: [src]
  - {name: Sink, entry: "parts:nowhere", inputs: [dobule]}
"""
PARTS = "def source(dispatch):\n    pass\n\ndef double(value):\n    return 2 * value\n"
WORKFLOW = "name: CI\njobs:\n  test: {runs-on: ubuntu-latest, steps: [{run: make}]}\n"
# problems of BAD as (line, column, component, message), checked in the text output
BAD_PROBLEMS = {
    (7, 5, "double", "unknown key 'inptus'"),
    (8, 12, "Sink", "invalid name 'Sink'"),
    (8, 25, "Sink", "'parts' has no attribute 'nowhere'"),
    (8, 51, "Sink", "input 'dobule' names no spout or worker"),
}
LOCATED = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): "
    r"(?:\[(?P<comp>[^\]]+)\] )?(?P<msg>.+)$"
)
# GitHub's workflow command: ::error <prop>=<value>(,<prop>=<value>)*::<message>, where a
# property value holds no raw ',', ':', '%' (other than escapes), CR or LF
ANNOTATION = re.compile(
    r"^::error file=(?P<file>(?:[^,:%\r\n]|%25|%2C|%3A|%0D|%0A)+)"
    r"(?:,line=(?P<line>\d+))?(?:,col=(?P<col>\d+))?"
    r"::(?P<message>(?:[^%\r\n]|%25|%0D|%0A)*)$"
)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """good.yaml at the top; topologies/ with two good files, a bad one, a workflow, notes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parts.py").write_text(PARTS)
    (tmp_path / "good.yaml").write_text(GOOD.format(name="top"))
    folder = tmp_path / "topologies"
    (folder / "nested").mkdir(parents=True)
    (folder / "one.yaml").write_text("code: ..\n" + GOOD.format(name="one"))
    (folder / "nested" / "two.yml").write_text("code: ../..\n" + GOOD.format(name="two"))
    (folder / "bad.yaml").write_text(BAD.replace("name: bad\n", "name: bad\ncode: ..\n", 1))
    (folder / "ci.yaml").write_text(WORKFLOW)
    (folder / "notes.txt").write_text("spouts: not yaml\n")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "bad.yaml").write_text(BAD)
    return tmp_path


def parse_text(err: str) -> set[tuple[str, int, int, str | None, str, str]]:
    """(file, line, col, component, message, hint) of each problem in the text output."""
    found = set()
    lines = err.splitlines()
    for i, line in enumerate(lines):
        match = LOCATED.match(line)
        if match:
            hint = lines[i + 1].removeprefix("    hint: ")
            found.add(
                (
                    match["file"],
                    int(match["line"]),
                    int(match["col"]),
                    match["comp"],
                    match["msg"],
                    hint,
                )
            )
    return found


def test_one_bad_file_among_good_ones(tree: Path) -> None:
    code, out, err = run("validate", "good.yaml", "topologies")
    assert code == 1
    assert out.splitlines() == [
        "ok: good.yaml: 2 components (1 spout, 1 worker), 2 instances, 1 host (localhost)",
        "ok: topologies/one.yaml: 2 components (1 spout, 1 worker), 2 instances, "
        "1 host (localhost)",
        "ok: topologies/nested/two.yml: 2 components (1 spout, 1 worker), 2 instances, "
        "1 host (localhost)",
    ]
    problems = parse_text(err)
    bad = {(line, col, comp, msg) for _, line, col, comp, msg, _ in problems}
    # only bad.yaml's problems (the bad line is 1 lower: code: was added on line 2)
    assert {f for f, *_ in problems} == {"topologies/bad.yaml"}
    assert bad == {(line + 1, col, comp, msg) for line, col, comp, msg in BAD_PROBLEMS}
    assert err.splitlines()[-1] == "error: 4 problems found in 1 of 4 files"


def test_all_good_exits_0_and_a_file_is_checked_once(tree: Path) -> None:
    code, out, err = run("validate", "good.yaml", "topologies/one.yaml", "good.yaml")
    assert (code, err) == (0, "") and len(out.splitlines()) == 2


def test_json_lists_the_same_problems_as_text(tree: Path) -> None:
    _, _, err = run("validate", "good.yaml", "topologies")
    code, out, _ = run("validate", "--format", "json", "good.yaml", "topologies")
    document = json.loads(out)
    assert code == 1 and document["ok"] is False
    assert [(f["file"], f["ok"]) for f in document["files"]] == [
        ("good.yaml", True),
        ("topologies/bad.yaml", False),
        ("topologies/one.yaml", True),
        ("topologies/nested/two.yml", True),
    ]
    assert document["files"][0]["summary"]["name"] == "top"
    assert {
        (p["file"], p["line"], p["column"], p["component"], p["message"], p["hint"])
        for p in document["problems"]
    } == parse_text(err)
    assert len(document["problems"]) == 4


def test_github_annotations_follow_the_workflow_command_grammar(tree: Path) -> None:
    code, out, err = run("validate", "--format", "github", "good.yaml", "topologies")
    _, json_out, _ = run("validate", "--format", "json", "good.yaml", "topologies")
    assert code == 1 and err == "error: 4 problems found in 1 of 4 files\n"
    matches = [ANNOTATION.match(line) for line in out.splitlines()]
    assert all(matches), out
    expected = {(p["file"], p["line"], p["column"]) for p in json.loads(json_out)["problems"]}
    assert {(m["file"], int(m["line"]), int(m["col"])) for m in matches if m} == expected
    first = next(m for m in matches if m and int(m["line"]) == 8 and int(m["col"]) == 5)
    assert first["message"] == ("[double] unknown key 'inptus'%0Ahint: did you mean 'inputs'?")


def test_github_escaping_cannot_forge_a_command() -> None:
    problem = Problem("dir,x/a:b%.yaml", 3, 7, "100% wrong\r\n::error file=x::forged", "fix it")
    line = github_annotation(problem)
    assert line == (
        "::error file=dir%2Cx/a%3Ab%25.yaml,line=3,col=7::"
        "100%25 wrong%0D%0A::error file=x::forged%0Ahint: fix it"
    )
    assert "\n" not in line and ANNOTATION.match(line)
    assert github_annotation(Problem("f.yaml", None, None, "unreadable")) == (
        "::error file=f.yaml::unreadable"
    )


def test_no_import_checks_everything_but_the_code(tree: Path) -> None:
    (tree / "imports.yaml").write_text(
        textwrap.dedent("""\
        name: imports
        spouts: [{name: src, entry: "missing_module:source"}]
        workers: [{name: w, entry: "parts:double", inputs: [src], args: {x: 1}}]
        """)
    )
    code, _, err = run("validate", "imports.yaml")
    assert code == 1 and "no module 'missing_module'" in err
    assert "parts:double cannot be called with value" in err
    code, out, err = run("validate", "--no-import", "imports.yaml")
    assert (code, err) == (0, "") and out.startswith("ok: imports.yaml")
    code, _, err = run("validate", "--no-import", "topologies/bad.yaml")
    assert code == 1 and "input 'dobule' names no spout or worker" in err


def test_named_files_that_are_not_topologies(tree: Path) -> None:
    code, _, err = run("validate", "topologies/ci.yaml")
    assert code == 1 and "unknown key 'jobs'" in err
    code, out, err = run(
        "validate", "--only-topologies", "topologies/ci.yaml", "good.yaml", "topologies/notes.txt"
    )
    assert (code, err) == (0, "") and out.startswith("ok: good.yaml")


def test_a_folder_without_topologies_is_an_error(tree: Path) -> None:
    (tree / "empty").mkdir()
    code, _, err = run("validate", "empty")
    assert code == 1 and err.startswith("empty: no topology file in this folder\n")

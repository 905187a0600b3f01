"""`clusterduck validate` and `clusterduck graph` as a user runs them: output and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, REPO, WriteTopology
from test_validation import ALL_AT_ONCE, EXPECTED, MODULES

from clusterduck.cli import main

LOCATED = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): \[(?P<comp>[^\]]+)\] (?P<msg>.+)$")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "name, summary",
    [
        ("wordcount", "4 components (1 spout, 3 workers), 6 instances, 1 host (localhost)"),
        ("bundled", "3 components (2 spouts, 1 worker), 3 instances, 1 host (localhost)"),
    ],
)
def test_examples_validate(name: str, summary: str) -> None:
    code, out, err = run("validate", str(EXAMPLES / f"{name}.yaml"))
    assert (code, err) == (0, "")
    assert out == f"ok: {EXAMPLES / f'{name}.yaml'}: {summary}\n"


def test_every_problem_reported_with_its_line(write_topology: WriteTopology) -> None:
    path = write_topology(ALL_AT_ONCE, MODULES)
    code, out, err = run("validate", str(path))
    assert code == 1 and out == ""
    lines = err.splitlines()
    located = [LOCATED.match(line) for line in lines if not line.startswith(("    ", "error:"))]
    assert all(located), err
    assert {(int(m["line"]), m["msg"]) for m in located if m} == EXPECTED
    assert all(m["file"] == str(path) for m in located if m)
    hints = [line for line in lines if line.startswith("    hint: ")]
    assert len(hints) == len(EXPECTED)
    assert lines[-1] == f"error: {len(EXPECTED)} problems found"


def test_json_output(write_topology: WriteTopology) -> None:
    path = write_topology(ALL_AT_ONCE, MODULES)
    code, out, _ = run("validate", "--json", str(path))
    result = json.loads(out)
    assert code == 1 and result["ok"] is False
    assert result["files"] == [{"file": str(path), "ok": False, "summary": None}]
    assert {(e["line"], e["message"]) for e in result["problems"]} == EXPECTED
    assert set(result["problems"][0]) == {"file", "line", "column", "component", "message", "hint"}

    example = str(EXAMPLES / "wordcount.yaml")
    code, out, _ = run("validate", "--format", "json", example)
    assert code == 0 and json.loads(out) == {
        "ok": True,
        "problems": [],
        "files": [
            {
                "file": example,
                "ok": True,
                "summary": {
                    "name": "wordcount",
                    "components": 4,
                    "spouts": 1,
                    "workers": 3,
                    "instances": 6,
                    "hosts": ["localhost"],
                },
            }
        ],
    }


def test_json_stays_pure_when_user_code_prints(write_topology: WriteTopology) -> None:
    path = write_topology(
        """
        name: loud
        spouts: [{name: src, entry: "noisy:source"}]
        """,
        {"noisy": "print('hello from import')\ndef source(dispatch):\n    pass\n"},
    )
    code, out, err = run("validate", "--json", str(path))
    assert code == 0 and json.loads(out)["ok"] is True and "hello from import" in err


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    code, out, err = run("validate", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read the topology file" in err


@pytest.mark.parametrize("fmt", ["text", "dot", "mermaid"])
def test_graph_formats(fmt: str) -> None:
    code, out, err = run("graph", str(EXAMPLES / "wordcount.yaml"), "--format", fmt)
    assert (code, err) == (0, "")
    for name in ("lines", "split", "count", "top"):
        assert name in out


def test_graph_of_a_bad_file_exits_1(write_topology: WriteTopology) -> None:
    path = write_topology("name: x\nspouts: []\n")
    code, _, err = run("graph", str(path))
    assert code == 1 and "a topology needs at least one spout" in err


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("clusterduck, version ")


def test_real_process_reports_every_problem(write_topology: WriteTopology) -> None:
    """The same file through a real interpreter: exit status and stderr as a shell sees them."""
    path = write_topology(ALL_AT_ONCE, MODULES)
    done = subprocess.run(
        [sys.executable, "-m", "clusterduck", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    for line, message in EXPECTED:
        assert f"{path}:{line}:" in done.stderr and message in done.stderr

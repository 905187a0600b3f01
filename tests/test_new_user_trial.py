"""What a new user's trial of the CLI found (s7u): ``up --wait`` saying how much of a
sink's output it shows, piped ``last error`` in full, YAML hints, ``logs`` of a run
that never started, Ctrl-C's exit code. Real processes through the CLI
(``lifecycle_fixtures``), no mocks."""

from __future__ import annotations

import dataclasses
import os
import pty
import re
import select
import socket
import subprocess
import time
from pathlib import Path

from lifecycle_fixtures import CLI, Clusterduck, interrupt

from clusterduck.protocol import EdgeStatus, InstanceStatus, State, TopologyStatus
from clusterduck.runtime.context import InstanceContext

PARTS = """\
def hundred(dispatch):
    for i in range(100):
        dispatch(i, i)


def show(value):
    print(f"line {value}", flush=True)


def explode(value):
    if value == 95:
        raise ValueError("exploded at 95, " + "and this message goes on and on " * 3)
    print(f"fine {value}", flush=True)
"""


def _sink_topology(duck: Clusterduck, name: str, entry: str) -> Path:
    (duck.tmp / "trial_parts.py").write_text(PARTS)
    path = duck.tmp / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"code: {duck.tmp}\n"
        "spouts:\n"
        "  - {name: source, entry: 'trial_parts:hundred'}\n"
        "workers:\n"
        f"  - {{name: sink, entry: 'trial_parts:{entry}', inputs: [source]}}\n"
    )
    return path


def test_up_wait_says_it_shows_only_the_end_of_a_sinks_output(duck: Clusterduck) -> None:
    name = duck.name("hundred")
    ran = duck.run("up", "--wait", str(_sink_topology(duck, name, "show")))
    assert ran.returncode == 0, ran.stderr
    heading = (
        f"── sink/0 printed (last 15 of 100 lines; all of them: clusterduck logs {name} sink) ──"
    )
    assert heading in ran.stdout, ran.stdout
    shown = [line for line in ran.stdout.splitlines() if line.startswith("line ")]
    assert len(shown) == 15, ran.stdout


def test_up_wait_labels_a_sinks_errors_as_logged(duck: Clusterduck) -> None:
    """A sink that raised: its log's end holds tracebacks, which it did not print."""
    name = duck.name("explode")
    ran = duck.run("up", "--wait", str(_sink_topology(duck, name, "explode")))
    assert ran.returncode == 0, ran.stderr
    assert "── sink/0 printed and logged (last 15 of " in ran.stdout, ran.stdout
    assert "── sink/0 printed ──" not in ran.stdout, ran.stdout
    # Piped, `status` has the whole last error (a terminal's table cuts it at 60).
    error = "seq 95: ValueError: exploded at 95, " + "and this message goes on and on " * 3
    piped = duck.run("status", name)
    assert error.strip() in piped.stdout, piped.stdout


def test_an_unquoted_variable_in_braces_gets_the_hint_to_quote_it(duck: Clusterduck) -> None:
    path = duck.tmp / "dollar.yaml"
    path.write_text(
        "name: dollar\nspouts:\n  - name: numbers\n    entry: m:f\n    args: {path: ${DATA_PATH}}\n"
    )
    ran = duck.run("validate", str(path))
    assert ran.returncode == 1, ran.stderr
    assert f"{path}:5:" in ran.stderr, ran.stderr
    assert 'quote ${DATA_PATH} in a { } or [ ] value ("${DATA_PATH}")' in ran.stderr, ran.stderr
    assert "close the '{'" not in ran.stderr, ran.stderr
    # In a list too, and a quoted one elsewhere on the way is not the culprit.
    path.write_text(
        'name: dollar\nspouts:\n  - {name: numbers, entry: m:f, args: {a: "${A:-1}", b: [${B}]}}\n'
    )
    ran = duck.run("validate", str(path))
    assert 'quote ${B} in a { } or [ ] value ("${B}")' in ran.stderr, ran.stderr


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def test_logs_of_a_run_that_never_started_says_why(duck: Clusterduck) -> None:
    """`up` failed while connecting to the only host: `logs` printed nothing, exit 0."""
    name = duck.name("hosty")
    path = duck.tmp / f"{name}.yaml"
    (duck.tmp / "trial_parts.py").write_text(PARTS)
    path.write_text(
        f"name: {name}\n"
        f"code: {duck.tmp}\n"
        "hosts:\n"
        f"  edge1: {{address: 127.0.0.1, port: {_closed_port()}}}\n"
        "spouts:\n"
        "  - {name: source, entry: 'trial_parts:hundred', host: edge1}\n"
        "workers:\n"
        "  - {name: sink, entry: 'trial_parts:show', inputs: [source], host: edge1}\n"
    )
    up = duck.run("up", str(path))
    assert up.returncode == 2, up.stderr
    for args in ((name,), (name, "sink")):
        ran = duck.run("logs", *args)
        assert ran.returncode == 2, (ran.stdout, ran.stderr)
        assert f"error: {name} never started: host 'edge1': cannot connect" in ran.stderr, (
            ran.stderr
        )
        assert f"see `clusterduck status {name}`" in ran.stderr.lower(), ran.stderr


def test_an_empty_file_gets_a_minimal_topology_that_validates(duck: Clusterduck) -> None:
    """The hint pointed at topologies/wordcount.yaml, which only a git checkout has."""
    empty = duck.tmp / "empty.yaml"
    empty.write_text("")
    ran = duck.run("validate", str(empty))
    assert ran.returncode == 1, ran.stderr
    assert "the file is empty" in ran.stderr and "wordcount.yaml" not in ran.stderr, ran.stderr
    # The hint's quoted lines are a topology that validates, given mymodule.py.
    lines = re.findall(r"`([^`]+)`", ran.stderr.split("hint:")[1])
    assert lines[0] == "name: hello", ran.stderr
    (duck.tmp / "mymodule.py").write_text(
        "def numbers(dispatch):\n    dispatch(0, 0)\n\n\ndef show(value):\n    print(value)\n"
    )
    minimal = duck.tmp / "minimal.yaml"
    minimal.write_text("\n".join(lines) + "\n")
    ok = duck.run("validate", str(minimal))
    assert ok.returncode == 0, (minimal.read_text(), ok.stderr)


def _first_output(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    """What ``fd`` gives until ``marker`` appears (polled with a deadline, never slept)."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {marker!r} within {timeout} s (got {data!r})")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a pty whose other end closed
            chunk = b""
        if not chunk:
            raise AssertionError(f"the output ended before {marker!r} (got {data!r})")
        data += chunk
    return data


def test_ctrl_c_ends_logs_follow_and_status_watch_with_130(duck: Clusterduck) -> None:
    """The README lists 130 for Ctrl-C; `logs -f` and `status --watch` exited 0."""
    name = duck.name("follow")
    ran = duck.run("up", "--wait", str(_sink_topology(duck, name, "show")))
    assert ran.returncode == 0, ran.stderr

    follow = subprocess.Popen(
        [*CLI, "logs", "-f", name, "sink"],
        env=duck.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=duck.tmp,
    )
    assert follow.stdout is not None
    _, err = interrupt(follow, lambda: _first_output(follow.stdout.fileno(), b"line 99"))
    assert follow.returncode == 130, err
    assert b"Traceback" not in err, err

    # status --watch draws only on a terminal: a pseudo-terminal shows when it runs.
    leader, follower = pty.openpty()
    watch = subprocess.Popen(
        [*CLI, "status", "--watch", name],
        env={**duck.env, "TERM": "xterm", "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=duck.tmp,
    )
    os.close(follower)
    try:
        interrupt(watch, lambda: _first_output(leader, b"finished"))
    finally:
        os.close(leader)
    assert watch.returncode == 130


REPO = Path(__file__).resolve().parent.parent


def test_the_readme_schema_of_status_json_has_every_key() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index("`status --json` is a stable schema")
    schema = readme[start : readme.index("\n\n", start)]
    named = set(re.findall(r'"(\w+)"', schema))
    status = TopologyStatus("t", State.RUNNING)
    expected = {*status.to_dict(), *InstanceStatus.KEYS, *EdgeStatus("x/0").to_dict()}
    assert expected - named == set(), sorted(expected - named)


def test_the_reference_lists_every_attribute_of_context() -> None:
    reference = (REPO / "docs" / "reference.md").read_text()
    section = reference[reference.index("**Who is running: `clusterduck.context()`.**") :]
    attributes = [f.name for f in dataclasses.fields(InstanceContext)] + ["seq_id"]
    missing = [a for a in attributes if f"| `{a}` |" not in section]
    assert not missing, missing

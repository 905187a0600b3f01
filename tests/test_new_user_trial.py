"""What a new user's trial of the CLI found (s7u): ``up --wait`` saying how much of a
sink's output it shows, piped ``last error`` in full, YAML hints, ``logs`` of a run
that never started, Ctrl-C's exit code. Real processes through the CLI
(``lifecycle_fixtures``), no mocks."""

from __future__ import annotations

import socket
from pathlib import Path

from lifecycle_fixtures import Clusterduck

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

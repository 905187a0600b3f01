"""``logs -n N`` begins at the start of a log record, never among a traceback's frames;
``status`` shows ``0s``, not ``-``, for an instance that has run under a second.

The view is a pure function (clusterduck/logview.py), tested over generated logs (hypothesis)
whose record starts are known; then through the real CLI on a worker that logs a
traceback for every tenth message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lifecycle_fixtures import Clusterduck
from rich.console import Console
from topology_files import write_topology

from clusterduck.cli.console import status_table
from clusterduck.dashboard.status_source import log_tail
from clusterduck.logview import LOOK_BACK, last_records, may_begin
from clusterduck.protocol import ComponentStatus, InstanceStatus, State, TopologyStatus

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

HERE = Path(__file__).resolve().parent
HEAD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[")

# -- generated logs: records whose first line is known ---------------------------------

_stamp = "2026-01-31 12:00:00,123"
_frames = st.lists(
    st.sampled_from(
        [
            ['  File "/app/parts.py", line 12, in parse', "    return int(line)"],
            ['  File "/app/parts.py", line 3, in <module>', "    x = (", "        ^"],
            ['  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads'],
        ]
    ),
    min_size=1,
    max_size=4,
).map(lambda fs: [line for f in fs for line in f])
_exception = st.sampled_from(
    ["ValueError: refusing 7", "KeyError: 'word'", "RuntimeError: boom", "ZeroDivisionError"]
)


@st.composite
def _traceback(draw: st.DrawFn) -> list[str]:
    lines = ["Traceback (most recent call last):", *draw(_frames), draw(_exception)]
    if draw(st.booleans()):  # chained: the one it happened while handling comes first
        chain = draw(
            st.sampled_from(
                [
                    "During handling of the above exception, another exception occurred:",
                    "The above exception was the direct cause of the following exception:",
                ]
            )
        )
        lines = [*draw(_traceback()), "", chain, "", *lines]
    return lines


_group = st.just(
    [
        "  + Exception Group Traceback (most recent call last):",
        '  |   File "/app/parts.py", line 9, in fan',
        "  |     raise ExceptionGroup('eg', errors)",
        "  | ExceptionGroup: eg (2 sub-exceptions)",
        "  +-+---------------- 1 ----------------",
        "    | ValueError: 1",
        "    +------------------------------------",
    ]
)


@st.composite
def _record(draw: st.DrawFn) -> list[str]:
    """One record: a log line (maybe with a traceback), a traceback printed without one
    (an uncaught exception), or a line the code printed."""
    kind = draw(st.sampled_from(["log", "logged traceback", "bare traceback", "group", "print"]))
    head = f"{_stamp} ERROR [flaky/0] flaky raised on seq 7 (message dropped):"
    if kind == "log":
        return [f"{_stamp} INFO [flaky/0] {draw(st.sampled_from(['ready', 'finished']))}"]
    if kind == "logged traceback":
        return [head, *draw(_traceback())]
    if kind == "bare traceback":
        return draw(_traceback())
    if kind == "group":
        return [head, *draw(_group)]
    # (Neither indented nor blank: after a traceback those are taken as more of it.)
    return [draw(st.sampled_from(["hello", "word\t3", "{'a': 1}", "done: 3 words"]))]


@st.composite
def _log(draw: st.DrawFn) -> tuple[list[str], set[int]]:
    """A log's lines, and the indexes where its records begin (it begins with a log
    line, as a process's does: what comes before the first is not known to begin)."""
    lines: list[str] = []
    starts: set[int] = set()
    for record in [[f"{_stamp} INFO [flaky/0] ready"], *draw(st.lists(_record(), max_size=12))]:
        if record[0].startswith("Traceback") and HEAD.match(lines[-1]):
            # (Right under a log line, a traceback is that record's: as logged.)
            lines.append("printed")
            starts.add(len(lines) - 1)
        starts.add(len(lines))
        lines += record
    return lines, starts


@given(_log(), st.integers(1, 60))
def test_a_view_begins_where_a_record_begins(log: tuple[list[str], set[int]], n: int) -> None:
    lines, starts = log
    view = last_records(lines, n)
    assert view == lines[len(lines) - len(view) :]  # the end of the log
    assert len(view) >= min(n, len(lines))  # at least the lines asked for
    begin = len(lines) - len(view)
    first = max(0, len(lines) - n)
    # It begins at the last record start at or above the n-th last line.
    assert begin == max(s for s in starts if s <= first)


@given(_log())
def test_exactly_the_first_line_of_each_record_may_begin_a_view(
    log: tuple[list[str], set[int]],
) -> None:
    lines, starts = log
    assert may_begin(lines) == [i in starts for i in range(len(lines))]


def test_what_a_process_printed_is_cut_like_tail() -> None:
    """Lines a process printed are records of their own; a log that shows no record
    start near the end (a long traceback, or only output) is cut like ``tail``; blank
    and indented lines right after a traceback are taken as more of its exception."""
    printed = [f"line {i}" for i in range(50)]
    assert last_records(printed, 5) == printed[-5:]
    after = ["Traceback (most recent call last):", '  File "x.py", line 1, in f', "E: 1"]
    assert last_records(["out", *after, "  note", "", "next"], 2) == [*after, "  note", "", "next"]
    assert last_records(["out", *after, "  note", ""], 2) == [*after, "  note", ""]
    frames = ["  File 'x.py', line 1, in f", "    f()"] * (LOOK_BACK // 2 + 10)
    long = ["Traceback (most recent call last):", *frames, "RecursionError: too deep"]
    assert last_records(long[-(LOOK_BACK + 5) :], 5) == long[-5:]
    assert last_records([], 5) == [] and last_records(printed, 0) == []


# -- uptime ----------------------------------------------------------------------------


def _uptime_cells(*rows: InstanceStatus) -> list[str]:
    status = TopologyStatus("t", State.RUNNING, components=(ComponentStatus("c", "worker", rows),))
    console = Console(width=300, record=True)
    console.print(status_table(status))
    lines = console.export_text().splitlines()
    end = lines[1].index("uptime") + len("uptime")  # right-aligned under its title
    return [line[end - 8 : end].strip() for line in lines[2 : 2 + len(rows)]]


def test_an_instance_that_has_run_under_a_second_shows_0s() -> None:
    rows = (
        InstanceStatus("c", 0, "localhost", State.RUNNING, pid=11, uptime=0.4),
        InstanceStatus("c", 1, "localhost", State.RUNNING, pid=12, uptime=0.0),
        InstanceStatus("c", 2, "localhost", State.FINISHED, pid=13, uptime=0.0),
        InstanceStatus("c", 3, "localhost", State.RUNNING, pid=14, uptime=75.2),
        InstanceStatus("c", 4, "localhost", State.STARTING, pid=15),  # no report yet
        InstanceStatus("c", 5, "localhost", State.STARTING),  # not even a process
    )
    assert _uptime_cells(*rows) == ["0s", "0s", "0s", "1m15s", "-", "-"]


# -- through the CLI -------------------------------------------------------------------


def test_logs_n_never_begins_among_a_tracebacks_frames(
    duck: Clusterduck, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker logs a traceback (a head line, ``Traceback``, four frame lines, the
    exception) for every tenth message: each ``-n`` from 1 to 8 used to begin inside one
    for most values (``    raise ValueError(...)`` as the first line shown)."""
    name, topology = write_topology(
        duck,
        "tb",
        HERE / "topologies",
        ["{name: numbers, entry: 'cases:count_up', args: {count: 100}}"],
        ["{name: flaky, entry: 'cases:fail_every_tenth', inputs: [numbers]}"],
    )
    done = duck.run("up", str(topology), "--wait")
    assert done.returncode == 0, done.stderr
    # `up --wait` shows the end of what each sink wrote (15 lines): from a record's start.
    shown = done.stdout.splitlines()
    (heading,) = [i for i, line in enumerate(shown) if line.startswith("── flaky/0 printed")]
    first = shown[heading + 1]
    assert HEAD.match(first), f"up --wait shows flaky/0 from {first!r}"
    run_dir = Path(duck.record(name)["hosts"]["localhost"]["run_dir"])
    log = (run_dir / "logs" / "flaky.0.log").read_text().splitlines()
    assert sum("Traceback (most recent call last):" in line for line in log) == 10
    for n in range(1, 9):
        out = duck.run("logs", name, "flaky", "-n", str(n))
        assert out.returncode == 0, out.stderr
        header, *body = out.stdout.splitlines()
        assert header.startswith("==> flaky/0 "), out.stdout
        assert HEAD.match(body[0]), f"-n {n} begins with {body[0]!r}"
        assert len(body) >= n and body == log[len(log) - len(body) :], (n, body)
    # The dashboard's log view (its /api/.../log) shows the same lines.
    monkeypatch.setenv("CLUSTERDUCK_HOME", str(duck.home))
    for n in range(1, 9):
        text = log_tail(name, "flaky", 0, n)
        assert HEAD.match(text), f"the dashboard's -n {n} begins with {text[:40]!r}"
        assert text.splitlines() == log[len(log) - len(text.splitlines()) :]


def test_lines_are_counted_as_tail_counts_them() -> None:
    """Only newlines end a line: a progress line with carriage returns, or a field
    separator a process printed, is one line of the log (``logs -n``), kept as it is."""
    from clusterduck.logview import last_records, lines_of

    text = "result 4\ndownloading 10%\r50%\r100%\nsep\x1cfield\n"
    assert lines_of(text) == ["result 4", "downloading 10%\r50%\r100%", "sep\x1cfield"]
    assert "".join(lines_of(text, True)) == text
    assert last_records(lines_of(text), 2) == ["downloading 10%\r50%\r100%", "sep\x1cfield"]
    assert lines_of("no newline at the end") == ["no newline at the end"]
    assert lines_of("") == []

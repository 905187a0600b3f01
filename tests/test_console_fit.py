"""The status table in a terminal too narrow for its 17 columns: it leaves out the
least useful ones and says so, instead of cutting every cell down to ``lo…``."""

from __future__ import annotations

import io

from rich.console import Console

from clusterduck.cli.console import PIPE_WIDTH, HostProgress, status_table, throughput_table
from clusterduck.protocol import ComponentStatus, InstanceStatus, State, TopologyStatus


def a_status(last_error: str | None = None) -> TopologyStatus:
    def row(component: str, index: int, **kw: object) -> InstanceStatus:
        return InstanceStatus(
            component,
            index,
            "localhost",
            State.RUNNING,
            pid=123456 + index,
            received=1_234_567,
            emitted=1_234_567,
            rate=12_345.0,
            uptime=3725.0,
            cost_ms=0.512,
            in_flight=256,
            **kw,  # type: ignore[arg-type]
        )

    return TopologyStatus(
        "wordcount",
        State.RUNNING,
        components=(
            ComponentStatus("split", "worker", (row("split", 0), row("split", 1))),
            ComponentStatus("count", "worker", (row("count", 0, last_error=last_error),)),
        ),
    )


def rendered(status: TopologyStatus, width: int) -> str:
    console = Console(width=width, record=True)
    console.print(status_table(status))
    return console.export_text()


def test_an_80_column_terminal_gets_whole_cells_and_a_note() -> None:
    text = rendered(a_status(), 80)
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    lines = text.splitlines()
    header = lines[1].split()
    for must in ("component", "host", "state", "received", "emitted", "errors", "rate/s"):
        assert must in header, text
    rows = [line.split() for line in lines[2:5]]
    assert [r[0] for r in rows] == ["split", "split", "count"], text
    assert all("localhost" in r and "running" in r and "1,234,567" in r for r in rows), text
    assert "not shown at this width: in flight" in text and "status --json" in text, text


def test_a_long_last_error_goes_under_a_narrow_table() -> None:
    error = "ValueError: could not convert string to float: 'n/a' (row 17)"
    text = rendered(a_status(error), 80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    # Under the table it is whole (it wraps): only a cell of the table is cut, at 60.
    assert f"count/0 last error: {error}" in " ".join(text.split()), text


def test_only_a_terminal_cuts_the_last_error() -> None:
    """A pipe or a file gets every column in full (README), the last error included."""
    error = "ValueError: " + "a long explanation of what went wrong " * 4 + "(row 17)"
    assert len(error) > 60
    terminal = Console(width=300, record=True, force_terminal=True)
    terminal.print(status_table(a_status(error)))
    text = terminal.export_text()
    assert error[:60] in text and error not in text, text
    piped = Console(file=io.StringIO(), width=PIPE_WIDTH)  # what make_console gives a pipe
    assert not piped.is_terminal
    piped.print(status_table(a_status(error)))
    assert error in piped.file.getvalue()  # type: ignore[attr-defined]


def test_a_wide_terminal_shows_every_column() -> None:
    text = rendered(a_status("boom"), 300)
    header = text.splitlines()[1]
    for title in ("pid", "anomalies", "in flight", "queue ms", "ms/msg", "restarts", "uptime"):
        assert title in header, text
    assert "last error" in header and "not shown" not in text, text


def test_messages_lost_to_a_crash_get_a_column_once_there_are_any() -> None:
    assert "lost" not in rendered(a_status(), 300).splitlines()[1]
    crashed = InstanceStatus(
        "count", 0, "localhost", State.RUNNING, pid=7, restarts=1, lost=3, last_error="SIGKILL"
    )
    status = TopologyStatus(
        "wordcount",
        State.RUNNING,
        components=(ComponentStatus("count", "worker", (crashed,)),),
    )
    for width in (300, 80):
        lines = rendered(status, width).splitlines()
        at = lines[1].find(" lost")  # right-aligned: the count ends under the title's end
        assert at > 0, lines
        assert lines[2][at : at + 5].strip() == "3", lines


def progress_lines(width: int) -> list[str]:
    console = Console(width=width, record=True)
    progress = HostProgress(console, ["localhost", "edge-node-17"])
    progress("localhost", "spawn")
    progress("edge-node-17", "ready")
    console.print(progress._render())
    return console.export_text().splitlines()


def test_start_up_progress_keeps_each_host_on_one_line_in_80_columns() -> None:
    lines = progress_lines(80)
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines), lines
    local, edge = lines
    assert local.startswith("localhost") and "✓✓✓✓✓…" in local and "spawn" in local, lines
    assert edge.startswith("edge-node-17") and "✓" * 8 + " ready" in edge, lines


def test_start_up_progress_names_every_step_where_it_fits() -> None:
    local, edge = progress_lines(200)
    assert "✓ connect" in local and "… spawn" in local and "· ready" in local
    assert "✓ wire  ✓ ready" in edge


def test_up_waits_live_view_shows_the_problems() -> None:
    """A join waiting for a lost id under `up --wait`: the live view is all one sees."""
    problem = "join/0 has waited 12 s for id 2307 (its part from square has not come)"
    status = a_status().replace(problems=(problem,))
    console = Console(width=300, record=True)
    console.print(throughput_table(status))
    assert f"! {problem}" in console.export_text()

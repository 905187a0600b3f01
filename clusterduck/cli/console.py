"""What the CLI shows a person: the status table, the per-host start-up progress,
the live throughput of ``up --wait``. The only module that uses rich.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any, TextIO, cast

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..protocol import AT_LEAST_ONCE, ComponentStatus, InstanceStatus, State, TopologyStatus

__all__ = [
    "HostProgress",
    "list_table",
    "live_view",
    "make_console",
    "status_table",
    "throughput_table",
]

STEPS = ["connect", "check", "ship", "queue", "start", "spawn", "wire", "ready"]
_STATE_STYLE = {
    "running": "green",
    "finished": "blue",
    "draining": "yellow",
    "starting": "yellow",
    "failed": "red",
    "crashed": "red",
    "unreachable": "red",
    "broken": "red",
    "stopped": "dim",
    "failing": "red",
}


# A pipe or a file has no width: wide enough that no row of a table ever wraps (each
# instance stays one line for grep and awk), and nothing else is padded to it.
PIPE_WIDTH = 4096


class _Stripped:
    """stdout or stderr (looked up at each write, as rich does), every line's trailing
    blanks removed: a table pads its last column, which `diff`, `grep 'x$'` and
    editors showing whitespace then see on every row of a piped `status` or `list`."""

    def __init__(self, err: bool) -> None:
        self.err = err
        self.partial = ""

    @property
    def target(self) -> TextIO:
        return sys.stderr if self.err else sys.stdout

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        if lines:
            self.target.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.target.write(self.partial)
            self.partial = ""
        self.target.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.target.fileno()


def make_console(err: bool = False) -> Console:
    """A console on stdout (or stderr); a pipe or a file never truncates the table, and
    gets no trailing blanks."""
    console = Console(stderr=err, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        out = cast("IO[str]", _Stripped(err))  # the part of a text file rich uses
        console = Console(file=out, highlight=False, soft_wrap=False, width=PIPE_WIDTH)
    return console


def live_view(
    console: Console, renderable: Any, *, refresh: float, transient: bool = False
) -> Live:
    """A display refreshed in place (``with live_view(...) as live: live.update(...)``)."""
    return Live(
        renderable,
        console=console,
        refresh_per_second=refresh,
        transient=transient,
        auto_refresh=console.is_terminal,
    )


def _state(state: State | str) -> Text:
    text = state.value if isinstance(state, State) else state
    return Text(text, style=_STATE_STYLE.get(text, ""))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# States in which an instance has reported (its uptime is known, if under a second).
_REPORTED = frozenset({State.RUNNING, State.DRAINING, State.FINISHED})


def _uptime(row: InstanceStatus) -> str:
    """``0s`` for an instance that has run under a second; ``-`` only while nothing
    is known (not started, or no report yet)."""
    if row.uptime or (row.pid and row.state in _REPORTED):
        return _duration(row.uptime)
    return "-"


def _anomalies(anomalies: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(anomalies.items()) if v) or "-"


def _queue_ms(row: InstanceStatus) -> str:
    """The longest estimated wait on this instance's outgoing edges (flow control)."""
    return f"{max(e.queue_ms for e in row.edges):,.1f}" if row.edges else "-"


def _cost(row: InstanceStatus) -> str:
    """The instance's own measured work per message: the bottleneck has the highest."""
    return f"{row.cost_ms:.3f}" if row.cost_ms else "-"


# A component whose instances work at least this share of the time is named under the
# status table as the one setting the pace (README, "Flow control").
BOTTLENECK_BUSY = 0.7


def _bottleneck(status: TopologyStatus) -> Text | None:
    """The README's "highest ms/msg × rate", worked out: the component whose running
    instances spend the largest share of their time working, when that share is high.
    Upstream of it everything waits for its credit, so it is where parallelism helps."""
    best: tuple[float, ComponentStatus, list[InstanceStatus]] | None = None
    for comp in status.components:
        rows = [r for r in comp.instances if r.state is State.RUNNING]
        if not rows:
            continue
        # cost × rate can exceed 1 for a moment (both are averages over windows).
        busy = sum(min(1.0, r.cost_ms * r.rate / 1000) for r in rows) / len(rows)
        if busy >= BOTTLENECK_BUSY and (best is None or busy > best[0]):
            best = (busy, comp, rows)
    if best is None:
        return None
    busy, comp, rows = best
    cost = sum(r.cost_ms for r in rows) / len(rows)
    rate = sum(r.rate for r in rows) / len(rows)
    each = "" if len(rows) == 1 else " each"
    instances = "1 instance" if len(rows) == 1 else f"{len(rows)} instances"
    return Text(
        f"bottleneck: {comp.name}, busy {busy:.0%} ({instances}, {cost:.3g} ms/msg × "
        f"{rate:,.0f} msgs/s{each}): what feeds it waits for it; raise its parallelism or "
        "make its work cheaper",
        style="yellow",
    )


# Status columns (title, justify), in the order docs/reference.md §3 lists them.
_STATUS_COLUMNS = [
    ("component", "left"),
    ("#", "right"),
    ("host", "left"),
    ("pid", "right"),
    ("state", "left"),
    ("received", "right"),
    ("emitted", "right"),
    ("errors", "right"),
    ("anomalies", "left"),
    ("backlog", "right"),
    ("in flight", "right"),
    ("queue ms", "right"),
    ("ms/msg", "right"),
    ("rate/s", "right"),
    ("restarts", "right"),
    ("uptime", "right"),
    ("last error", "left"),
]
# What goes first when a terminal is too narrow for every column: empty columns lose
# nothing, then the flow-control detail, then what `status --json` keeps anyway.
_DROP_ORDER = [
    "in flight",
    "queue ms",
    "ms/msg",
    "uptime",
    "anomalies",
    "pending",
    "replayed",
    "restarts",
    "pid",
    "#",
    "backlog",
]
_EMPTY = {"", "-", "0"}
_LAST_ERROR_ROOM = 24  # "last error" wraps into what is left; it needs at least this
# A terminal's table cuts a last error to this much (`status --json`, a pipe or a file,
# and the line under a table too narrow for it, have all of it).
LAST_ERROR_CELL = 60


class _FittedTable:
    """The status table, fitted to the width it is drawn in: rather than squeezing every
    cell of a 17-column table into an 80-column terminal (``lo…``, ``fi…``), it leaves
    out the least useful columns and says which (``status --json`` has them all)."""

    def __init__(self, columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
        self.columns = columns
        self.rows = rows

    def _table(self, keep: list[int], *, measuring: bool = False, cut: bool = False) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for i in keep:
            title, justify = self.columns[i]
            wraps = title == "last error"
            table.add_column(title, justify=justify, no_wrap=not wraps)  # type: ignore[arg-type]
        for row in self.rows:
            cells = [row[i] for i in keep]
            if measuring or cut:  # a long last error wraps: count only the room it needs
                room = _LAST_ERROR_ROOM if measuring else LAST_ERROR_CELL
                cells = [
                    str(c)[:room] if self.columns[i][0] == "last error" else c
                    for i, c in zip(keep, cells, strict=True)
                ]
            table.add_row(*cells)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        titles = [title for title, _ in self.columns]
        keep = list(range(len(titles)))
        width = options.max_width
        hidden: list[str] = []

        unbounded = options.update_width(10_000)  # a table measures no wider than allowed

        def fits() -> bool:
            table = self._table(keep, measuring=True)
            return Measurement.get(console, unbounded, table).maximum <= width

        empty = [
            i
            for i, title in enumerate(titles)
            if title in (*_DROP_ORDER, "last error")
            and all(str(row[i]) in _EMPTY for row in self.rows)
        ]
        order = empty + [titles.index(t) for t in _DROP_ORDER if t in titles]
        for i in order:
            if fits():
                break
            if i in keep:
                keep.remove(i)
                if i not in empty:
                    hidden.append(titles[i])
        error = titles.index("last error")
        below = error in keep and not fits()  # still too wide: errors go under the table
        if below:
            keep.remove(error)
        yield self._table(keep, cut=console.is_terminal)
        if below:
            for row in self.rows:
                if str(row[error]) not in _EMPTY:
                    yield Text(f"{row[0]}/{row[1]} last error: {row[error]}", style="red")
        if hidden:
            yield Text(
                f"(not shown at this width: {', '.join(hidden)}; "
                "widen the terminal, or use `status --json`)",
                style="dim",
            )


def status_table(status: TopologyStatus) -> Group:
    """One row per instance, as docs/reference.md §3 lists the columns."""
    columns = list(_STATUS_COLUMNS)
    alo = status.guarantee == AT_LEAST_ONCE
    if alo:  # at-least-once: what is kept until done, and what was dispatched again
        columns += [("pending", "right"), ("replayed", "right")]
    # Messages a crashed process held: in the JSON always, in the table once there are any.
    lost = any(row.lost for row in status.instances())
    if lost:
        columns.insert(columns.index(("restarts", "right")) + 1, ("lost", "right"))
    rows: list[list[Any]] = []
    for comp in status.components:
        for row in comp.instances:
            rows.append(
                [
                    comp.name,
                    str(row.index),
                    row.host,
                    str(row.pid or "-"),
                    _state(row.state),
                    f"{row.received:,}",
                    f"{row.emitted:,}",
                    str(row.errors),
                    _anomalies(
                        {**row.anomalies, "rejected_frames": sum(row.rejected_frames.values())}
                    ),
                    f"{row.backlog:,}",
                    f"{row.in_flight:,}",
                    _queue_ms(row),
                    _cost(row),
                    f"{row.rate:,.0f}",
                    str(row.restarts),
                    *((f"{row.lost:,}",) if lost else ()),
                    _uptime(row),
                    " ".join((row.last_error or "").split()),  # one line per instance
                    *((f"{row.pending:,}", f"{row.replayed:,}") if alo else ()),
                ]
            )
    table = _FittedTable(columns, rows)
    head = Text.assemble(
        ("topology ", ""),
        (status.name, "bold"),
        ("  ", ""),
        _state(status.state),
        ("  at-least-once" if alo else "", ""),
    )
    parts: list[Any] = [head, table]
    if status.state in (State.RUNNING, State.FAILING):
        # A worker held up by an id lost in a crash leaves what feeds it busy for
        # nothing: its problem line below says why; "raise its parallelism" would mislead.
        stalled = any("crashed?)" in problem for problem in status.problems)
        bottleneck = None if stalled else _bottleneck(status)
        if bottleneck is not None:
            parts.append(bottleneck)
        for row in status.instances():
            if row.silent_seconds:
                parts.append(
                    Text(
                        f"{row.component}/{row.index} has not reported for "
                        f"{row.silent_seconds:,.0f} s: one call of its code has run that long "
                        f"(stuck, or very slow); its counters are as of then. See "
                        f"`clusterduck logs {status.name} {row.component}`",
                        style="yellow",
                    )
                )
    for group, job in status.slurm.items():
        parts.append(Text(f"slurm {group}: {job.describe()}"))
    for problem in status.problems:
        parts.append(Text(f"! {problem}", style="red"))
    if status.rejected_frames:
        parts.append(
            Text(
                "! control frames dropped by supervisors: " + _anomalies(status.rejected_frames),
                style="yellow",
            )
        )
    return Group(*parts)


def throughput_table(status: TopologyStatus) -> Group:
    """The short per-component view ``up --wait`` refreshes."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in (
        "component",
        "instances",
        "received",
        "emitted",
        "rate/s",
        "errors",
        "backlog",
        "state",
    ):
        table.add_column(col, justify="left" if col in ("component", "state") else "right")
    for comp in status.components:
        rows = comp.instances
        states = sorted({r.state.value for r in rows})
        table.add_row(
            comp.name,
            str(len(rows)),
            f"{sum(r.received for r in rows):,}",
            f"{sum(r.emitted for r in rows):,}",
            f"{sum(r.rate for r in rows):,.0f}",
            str(sum(r.errors for r in rows)),
            f"{sum(r.backlog for r in rows):,}",
            ", ".join(states),
        )
    head = Text.assemble(("topology ", ""), (status.name, "bold"), ("  ", ""), _state(status.state))
    # What `status` lists as problems (a worker waiting for a lost id, a failed host)
    # shows here too: the live view is all a user of `up --wait` looks at.
    problems = [Text(f"! {problem}", style="red") for problem in status.problems]
    return Group(head, table, *problems)


def list_table(records: list[Any]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("name", "state", "hosts", "started", "file"):
        table.add_column(col)
    for rec in records:
        table.add_row(
            rec.name,
            _state(rec.status),
            ", ".join(rec.hosts),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.started_at)),
            rec.file,
        )
    return table


class HostProgress:
    """Per-host start-up steps, live on a terminal and silent elsewhere.

    Called from several threads (hosts start in parallel), hence the lock."""

    def __init__(self, console: Console, hosts: list[str]) -> None:
        self.console = console
        self.hosts = hosts
        self.steps: dict[str, tuple[str, str]] = {h: ("waiting", "") for h in hosts}
        self.began = time.monotonic()
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> HostProgress:
        if self.console.is_terminal:
            self._live = Live(
                self._render(), console=self.console, refresh_per_second=8, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def __call__(self, host: str, step: str, detail: str = "") -> None:
        with self._lock:
            changed = self.steps.get(host) != (step, detail)
            self.steps[host] = (step, detail)
            if self._live is not None:
                self._live.update(self._render())
            elif step == "queue" and changed and detail != "sbatch":
                # Not a terminal (a batch log, CI): a Slurm job's queue states still
                # show, one line each, since waiting there can take long.
                self.console.print(f"{host}: slurm {detail}", markup=False, highlight=False)

    def _render(self) -> _HostSteps:
        return _HostSteps([(h, *self.steps.get(h, ("waiting", ""))) for h in self.hosts])


class _HostSteps:
    """The per-host progress rows: every step by name where the terminal is wide
    enough, else ticks and the current step's name, so a host stays on one line."""

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows

    def _table(self, compact: bool) -> Table:
        table = Table(box=None, pad_edge=False, show_header=False)
        table.add_column("host", style="bold", no_wrap=True)
        table.add_column("steps", no_wrap=True)
        table.add_column("detail", style="dim")
        for host, step, detail in self.rows:
            done = len(STEPS) if step == "ready" else STEPS.index(step) if step in STEPS else 0
            if compact:
                rest = len(STEPS) - done - 1
                marks = f"[green]{'✓' * done}[/]"
                if step == "ready":
                    marks += " [green]ready[/]"
                elif step in STEPS:
                    marks += f"[yellow]…[/][dim]{'·' * rest}[/] [yellow]{step}[/]"
                else:
                    marks += f"[dim]{'·' * len(STEPS)} {step}[/]"
                table.add_row(host, marks, detail[:50])
                continue
            parts = []
            for i, name in enumerate(STEPS):
                if i < done:
                    parts.append(f"[green]✓ {name}[/]")
                elif i == done and step in STEPS:
                    parts.append(f"[yellow]… {name}[/]")
                else:
                    parts.append(f"[dim]· {name}[/]")
            table.add_row(host, "  ".join(parts), detail[:50])
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Measured without the details: they wrap, the steps must not.
        steps_only = _HostSteps([(host, step, "") for host, step, _ in self.rows])
        unbounded = options.update_width(10_000)
        width = Measurement.get(console, unbounded, steps_only._table(compact=False)).maximum
        yield self._table(compact=width + 12 > options.max_width)  # 12: room for a detail

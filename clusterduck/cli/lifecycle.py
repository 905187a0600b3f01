"""The commands that run things: ``up``, ``status``, ``down``, ``logs``, ``list``.

They print and pick exit codes; ``deploy`` does the work and owns each record's status.
Heavy modules (deploy, the loader, rich) are imported when a command runs.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..exceptions import ClusterduckError, NeverStarted, RuntimeFault, StateError
from ..protocol import AT_LEAST_ONCE, RunLayout, State, TopologyStatus
from .errors import handle_errors

if TYPE_CHECKING:
    from rich.console import Console  # only for the type checker

    from ..deploy import Cluster
    from ..state import TopologyRecord

__all__ = ["down", "list_topologies", "logs", "status", "up"]

DOWN_TIMEOUT = 30.0
#: An error lists at most this many components (a wide topology's ran over the screen).
LISTED_AT_MOST = 8


def _find(name: str | None) -> TopologyRecord:
    """``state.find``, except that when NAME is left out and several topologies are
    marked running, they are asked first: one that finished since anyone last looked
    no longer makes the choice ambiguous."""
    from ..deploy import topology_status
    from ..state import find, load_all

    try:
        return find(name)
    except StateError:
        stale = [r for r in load_all() if r.active] if name is None else []
        if len(stale) < 2:
            raise
    for rec in stale:
        topology_status(rec)  # records the end of one that has ended
    return find(None)


# How much of each sink's log ``up --wait`` shows at the end (all of it: ``logs``).
SINK_LINES = 15
# A line the runtime logged (process.py's format), not one the user's code printed:
# ``2026-11-28 21:17:21,419 ERROR [sink/0] …``.
_LOGGED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[", re.MULTILINE)


def _sink_output(record: TopologyRecord, lines: int = SINK_LINES) -> list[tuple[str, str]]:
    """The end of each sink instance's log (from the start of a record, as ``logs -n``):
    what a finished topology produced, under a heading that says what it is (what the
    sink printed, and what clusterduck logged for it if it raised) and, when cut, how
    much is left out and how to see it all."""
    from ..deploy import Cluster
    from ..logview import LOOK_BACK, last_records, lines_of

    spec = record.spec
    cluster = Cluster(record)
    shown = []
    try:
        for comp in spec.sinks():
            for i in range(comp.parallelism):
                host = record.holder(comp.name, i)
                path = RunLayout(record.hosts[host].run_dir).instance_log(comp.name, i)
                try:
                    end = lines_of(_tail(cluster, host, path, lines + LOOK_BACK), True)
                    total = _line_count(cluster, host, path) if len(end) >= lines else 0
                except ClusterduckError:
                    continue
                shown_lines = last_records(end, lines)
                text = "".join(shown_lines)
                if not text.strip():
                    continue
                what = "printed and logged" if _LOGGED.search(text) else "printed"
                heading = f"{comp.name}/{i} {what}"
                if total > len(shown_lines):
                    heading += (
                        f" (last {len(shown_lines)} of {total:,} lines; all of them: "
                        f"clusterduck logs {record.name} {comp.name})"
                    )
                shown.append((heading, text))
    finally:
        cluster.close()
    return shown


def _line_count(cluster: Cluster, host: str, path: str) -> int:
    """Lines in a file on its host (``wc -l`` there); 0 if it cannot tell."""
    out = cluster.conn(host).run(["wc", "-l", path], timeout=30).stdout.split()
    return int(out[0]) if out and out[0].isdigit() else 0


def _tail(cluster: Cluster, host: str, path: str, lines: int) -> str:
    """The last lines of a file on its host (``tail`` there: nothing else crosses SSH)."""
    return cluster.conn(host).run(["tail", "-n", str(lines), path], timeout=30).stdout


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--wait",
    "mode",
    flag_value="wait",
    help="Follow live throughput until the topology finishes (Ctrl-C: graceful down).",
)
@click.option(
    "--detach",
    "mode",
    flag_value="detach",
    default=True,
    help="Return once every process is ready (the default).",
)
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Trust and record SSH host keys not yet in ~/.ssh/known_hosts.",
)
@click.option(
    "--wait-for-allocation",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Slurm groups: give up (cancel the job, exit 2) if it is still queued "
    "after SECONDS. Default: wait as long as the queue takes.",
)
@handle_errors
def up(
    file: Path, mode: str, accept_new_host_keys: bool, wait_for_allocation: float | None
) -> None:
    """Validate FILE, start every process on every host, and wire them together."""
    from ..prestart import EarlySupervisor

    # This machine's supervisor starts its interpreter while the file is validated.
    early = EarlySupervisor.start(file)
    try:
        from .. import deploy
        from ..loader import load
        from .console import HostProgress, make_console, status_table

        tf = load(file)
        topo = tf.topology
        deploy.refuse_running(topo.name)  # before any progress is shown
        out, err = make_console(), make_console(err=True)
        with HostProgress(err, topo.hosts_used()) as progress:
            record = deploy.start(
                tf,
                progress=progress,
                accept_new_host_keys=accept_new_host_keys,
                wait_for_allocation=wait_for_allocation,
                early=early,
                checked=True,
            )
    finally:
        if early is not None:
            early.discard()
    n = len(topo.instances())
    err.print(
        f"[green]started[/] {topo.name}: {n} processes on "
        f"{len(record.hosts)} host(s) ({', '.join(record.hosts)})"
    )
    if mode != "wait":
        out.print(status_table(deploy.topology_status(record)))
        err.print(
            f"follow it with `clusterduck status {topo.name} --watch`, "
            f"stop it with `clusterduck down {topo.name}`"
        )
        return
    final = _follow(record, out)
    out.print(status_table(final))
    for heading, text in _sink_output(record):
        out.print(f"── {heading} ──", style="bold", markup=False, highlight=False)
        # As the sink printed it: not through the console, which strips a piped line's
        # trailing blanks (tables pad them) and may wrap.
        click.echo(text, nl=not text.endswith("\n"))
    for line in _trouble(final):
        err.print(line, style="yellow", markup=False, highlight=False)
    if final.state is not State.FINISHED:
        raise RuntimeFault(
            f"topology {topo.name} ended {final.state.value}: "
            + "; ".join(final.problems)
            + f" (see `clusterduck logs {topo.name}`)"
        )


def _trouble(status: TopologyStatus) -> list[str]:
    """What went wrong in a run that still exits 0 (counted errors, anomalies, processes
    restarted after a crash, messages lost), per component, each with the command that
    shows why."""
    lines = []
    for comp in status.components:
        rows = comp.instances
        crashes = sorted({r.last_error for r in rows if r.restarts and r.last_error})
        counts = [
            (sum(r.errors for r in rows), "error", "errors", ""),
            (sum(sum(r.anomalies.values()) for r in rows), "anomaly", "anomalies", ""),
            (
                sum(r.restarts for r in rows),
                "restart",
                "restarts",
                f" ({'; '.join(crashes)})" if crashes else "",
            ),
            (sum(r.lost for r in rows), "message lost", "messages lost", ""),
        ]
        said = [f"{n:,} {one if n == 1 else many}{why}" for n, one, many, why in counts if n]
        if any(r.restarts for r in rows) and status.guarantee != AT_LEAST_ONCE:
            said.append("what a crashed process held is gone (guarantee: at-most-once)")
            if comp.kind == "spout":  # it has no resume point under at-most-once
                said.append(
                    "the restarted spout was called again from its start (no resume "
                    "point under at-most-once): unless it keeps its own position, what "
                    "it dispatched before the crash went downstream again (at-least-once "
                    "spouts can resume: README, Guarantees)"
                )
        if said:
            lines.append(
                f"{comp.name}: {', '.join(said)}; see `clusterduck logs {status.name} {comp.name}`"
            )
    return lines


def _totals(status: TopologyStatus, record: TopologyRecord) -> str:
    """What entered and what came out: the spouts' messages and the sinks'. (A sum of
    every instance's ``received`` counted each message once per hop.)"""
    spec = record.spec
    spouts = {c.name for c in spec.components if c.kind == "spout"}
    sinks = {c.name for c in spec.sinks()}
    rows = [(comp.name, row) for comp in status.components for row in comp.instances]
    dispatched = sum(row.emitted for name, row in rows if name in spouts)
    sunk = sum(row.received for name, row in rows if name in sinks)
    totals = f"spouts dispatched {dispatched:,}, sinks received {sunk:,}"
    # A host whose supervisor was gone (or did not answer) left no counts: say so, or a
    # killed supervisor's topology read "dispatched 0, received 0".
    unknown = [f"{name}/{row.index}" for name, row in rows if row.state is State.UNREACHABLE]
    if unknown:
        totals += (
            f" (not counting {', '.join(unknown[:8])}"
            + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
            + ": their supervisor was gone or did not answer)"
        )
    return totals


def _follow(record: TopologyRecord, out: Console) -> TopologyStatus:
    """Refresh throughput until the topology ends; Ctrl-C runs a graceful down."""
    from ..deploy import release, stop_topology, topology_status
    from .console import live_view, make_console, status_table, throughput_table

    status = topology_status(record)
    try:
        with live_view(out, throughput_table(status), refresh=4, transient=True) as live:
            while not status.state.ended and status.state is not State.BROKEN:
                time.sleep(0.5)
                status = topology_status(record)
                live.update(throughput_table(status))
                if status.state is State.FAILING:
                    break
    except KeyboardInterrupt:
        # The user asked for it: stop gracefully, show where it got, exit 130.
        make_console(err=True).print("interrupted: stopping gracefully (Ctrl-C again to force)")
        try:
            final = stop_topology(record, DOWN_TIMEOUT, force=False)
        except KeyboardInterrupt:
            final = stop_topology(record, 0, force=True)
        out.print(status_table(final))
        raise
    if status.state is not State.FINISHED:
        stopped = stop_topology(record, 5, force=True)
        return stopped.replace(state=State.FAILED, problems=status.problems)
    # Finished: topology_status recorded it. The supervisors exit by themselves after
    # a moment; `leave` makes them go now, and `up` returns once they have.
    for host in release(record):
        make_console(err=True).print(
            f"{host}: the supervisor of {record.spec.name} is still running "
            f"(a process's sockets wait for a reader); `clusterduck down "
            f"{record.spec.name}` ends it",
            style="yellow",
            markup=False,
            highlight=False,
        )
    return status


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="The documented JSON schema on stdout.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@handle_errors
def status(name: str | None, as_json: bool, watch: bool) -> None:
    """Every component and instance: host, pid, state, counters, backlog, rate, errors."""
    from ..deploy import topology_status
    from ..state import find

    record = _find(name)
    if as_json:
        click.echo(topology_status(record).to_json())
        return
    from .console import live_view, make_console, status_table

    out = make_console()
    if not watch:
        out.print(status_table(topology_status(record)))
        return
    # Until Ctrl-C, which exits 130 like every interrupted command (handle_errors).
    with live_view(out, status_table(topology_status(record)), refresh=2) as live:
        while True:
            time.sleep(1)
            record = find(record.name)
            live.update(status_table(topology_status(record)))


@click.command()
@click.argument("name", required=False)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DOWN_TIMEOUT,
    show_default=True,
    help="Seconds to drain before killing.",
)
@click.option("--force", is_flag=True, help="Kill at once, without draining.")
@handle_errors
def down(name: str | None, timeout: float, force: bool) -> None:
    """Stop a topology: spouts stop, in-flight messages drain, processes exit."""
    import contextlib

    from ..deploy import Cluster, stop_topology
    from .console import make_console

    # What it did (the summary) on stdout, as `status` prints its table: a script reads
    # it, `2>/dev/null` keeps it; progress, notices and warnings on stderr.
    out, err = make_console(), make_console(err=True)
    record = _find(name)  # SPEC: without NAME, exit 1 listing the candidates
    if not record.active:
        # Nothing runs: sweep anyway (a crash may have left something), but keep the
        # recorded end (a second `down` must not turn `stopped` into `failed`).
        cluster = Cluster(record)
        try:
            cluster.stop(0, force=True)
        finally:
            cluster.close()
        err.print(
            f"{record.name} is not running (it {record.status}); nothing to stop. "
            f"Its last status: `clusterduck status {record.name}`"
        )
        return
    busy = err.status(f"stopping {record.name} …") if err.is_terminal else contextlib.nullcontext()
    with busy:
        final = stop_topology(record, 0 if force else timeout, force=force)
    out.print(
        f"[green]down[/] {record.name}: {final.state.value}; {_totals(final, record)}; "
        f"logs kept (`clusterduck logs {record.name}`)"
    )
    for line in _trouble(final):  # what `up --wait` says at its end, for a detached run
        err.print(line, style="yellow", markup=False, highlight=False)
    for problem in final.problems:
        if problem.startswith("killed ") and not force:
            err.print(
                f"[yellow]{problem}[/]; what they held is lost; a longer drain: "
                f"`clusterduck down {record.name} --timeout S`",
                markup=True,
                highlight=False,
            )


@click.command("list")
@handle_errors
def list_topologies() -> None:
    """Running and finished topologies known to this machine."""
    from ..deploy import topology_status
    from ..state import load_all
    from .console import list_table, make_console

    records = load_all()
    if not records:
        click.echo("no topologies known here; start one with `clusterduck up FILE`")
        return
    for rec in records:  # refresh what is marked running
        if rec.active:
            topology_status(rec)
    make_console().print(list_table(load_all()))


@click.command()
@click.argument("name", required=False)
@click.argument("component", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n",
    "lines",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Lines per process.",
)
@click.option(
    "--run",
    "run",
    type=int,
    default=None,
    help="An earlier run of this topology (every `up` is a new run; default: the latest).",
)
@click.option("--all-runs", is_flag=True, help="Every kept run, oldest first.")
@handle_errors
def logs(
    name: str | None,
    component: str | None,
    follow: bool,
    lines: int,
    run: int | None,
    all_runs: bool,
) -> None:
    """Logs of every process (or of COMPONENT) of the latest run, fetched from their hosts.

    With one topology running (or known), NAME may be left out: `logs COMPONENT`."""
    from ..deploy import Cluster
    from ..logview import LOOK_BACK, last_records, lines_of

    record, component = _logs_target(name, component)
    names = [c.name for c in record.spec.components]
    if component is not None and component not in names + ["supervisor"]:
        raise ClusterduckError(
            f"topology {record.name} has no component {component!r} "
            f"({_components(component, names)})"
        )
    known = record.runs()
    if run is not None and run not in known:
        raise ClusterduckError(
            f"topology {record.name} has no run {run} kept "
            f"(runs: {', '.join(map(str, known))}; the latest is {record.run})"
        )
    runs = known if all_runs else [record.run if run is None else run]
    cluster = Cluster(record)
    try:
        for number in runs:
            files = _log_files(record, number, component)
            if follow:
                _follow_logs(cluster, files, lines)
                return
            if len(runs) > 1:
                click.echo(f"### run {number}" + (" (latest)" if number == record.run else ""))
            quiet = []  # all of them asked for: empty logs are one line, not a block each
            for host, entries in files.items():
                if host not in record.hosts:
                    continue  # a host the latest run no longer uses: no way to reach it
                for label, path in entries:
                    # From the start of a record: never among a traceback's frames.
                    end = lines_of(_tail(cluster, host, path, lines + LOOK_BACK))
                    text = "\n".join(last_records(end, lines)).rstrip("\n")
                    if not text and component is None and lines:
                        quiet.append(label)
                        continue
                    click.echo(f"==> {label} ({host}:{path}) <==")
                    click.echo(text or "(empty)")
            if quiet:
                click.echo(f"(nothing logged by {', '.join(quiet)})")
    finally:
        cluster.close()
    if record.run in runs and not record.active:
        _never_started(record, component)


def _never_started(record: TopologyRecord, component: str | None) -> None:
    """An ended run whose ``up`` failed before starting some hosts has no logs there:
    say so, and why (the recorded final status's problems), rather than print nothing
    and exit 0 (exit 2: a host failed)."""
    started = record.run_dirs()
    hosts = sorted(
        {
            host
            for comp in record.spec.components
            if component in (None, comp.name)
            for i in range(comp.parallelism)
            if (host := record.holder(comp.name, i)) not in started
        }
        | ({h for h in record.hosts if h not in started} if component == "supervisor" else set())
    )
    if not hosts:
        return
    problems = list((record.final or {}).get("problems") or [])
    why = [
        str(p).split("\n")[0]
        for p in problems
        if any(f"'{h}'" in str(p) or str(p).startswith(f"{h}:") for h in hosts)
    ]
    raise NeverStarted(
        record.name, hosts, why or [str(p).split("\n")[0] for p in problems], not started
    )


def _logs_target(name: str | None, component: str | None) -> tuple[TopologyRecord, str | None]:
    """The topology and component ``logs NAME [COMPONENT]`` means; a lone word that names
    no topology but a component of the only running (or known) one is that component."""
    from ..state import load_all

    try:
        return _find(name), component
    except StateError as exc:
        if name is None or component is not None:
            raise
        try:
            record = _find(None)
        except StateError:
            # Several topologies known (running or not): the one with that component
            # is not ambiguous; several that have it are listed.
            records = load_all()
            owners = [r.name for r in records if name in [c.name for c in r.spec.components]]
            if not owners:
                raise exc from None
            if len(owners) == 1:  # only one has it: that is the one meant
                click.echo(
                    f"(logs of {owners[0]}: the only topology with a component {name!r})", err=True
                )
                return next(r for r in records if r.name == owners[0]), name
            runs = [f"`clusterduck logs {owner} {name}`" for owner in owners]
            raise StateError(
                f"{exc}; {name!r} is a component of {_capped(owners)}: run "
                + " or ".join(runs[:LISTED_AT_MOST])
                + (" …" if len(runs) > LISTED_AT_MOST else "")
            ) from None
        names = [c.name for c in record.spec.components]
        if name in [*names, "supervisor"]:
            return record, name
        known = _capped([r.name for r in load_all()])
        raise StateError(
            f"no topology named {name!r} is known (known: {known}), and {record.name} "
            f"has no component {name!r} ({_components(name, names)})"
        ) from None


def _capped(names: list[str]) -> str:
    """``a, b, c``, or the first LISTED_AT_MOST of them and ``and N more``."""
    if len(names) <= LISTED_AT_MOST:
        return ", ".join(names)
    return f"{', '.join(names[:LISTED_AT_MOST])} and {len(names) - LISTED_AT_MOST} more"


def _components(wanted: str, names: list[str]) -> str:
    """What an error says a topology's components are: the closest to ``wanted`` first,
    at most LISTED_AT_MOST (``status NAME`` lists them all)."""
    import difflib  # an error's path only

    close = difflib.get_close_matches(wanted, names + ["supervisor"], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}components: {_capped(names)}, or 'supervisor'"


def _log_files(
    record: TopologyRecord, run: int, component: str | None
) -> dict[str, list[tuple[str, str]]]:
    """Per host, (label, path) of every log of one run (RunLayout: written once); a
    Slurm group's instances are found under the node supervisor that runs them."""
    run_dirs = record.run_dirs(run)
    files: dict[str, list[tuple[str, str]]] = {}
    for comp in record.spec.components:
        if component in (None, comp.name):
            for i in range(comp.parallelism):
                host = record.holder(comp.name, i)
                if host in run_dirs:
                    layout = RunLayout(run_dirs[host])
                    files.setdefault(host, []).append(
                        (f"{comp.name}/{i}", layout.instance_log(comp.name, i))
                    )
    if component in (None, "supervisor"):
        for host, run_dir in run_dirs.items():
            files.setdefault(host, []).append(
                (f"supervisor@{host}", RunLayout(run_dir).supervisor_log)
            )
    return files


def _follow_logs(cluster: Cluster, files: dict[str, list[tuple[str, str]]], lines: int) -> None:
    """``tail -F`` on every host at once, lines prefixed with their process."""
    merged: queue.Queue[str] = queue.Queue()

    def pump(host: str, entries: list[tuple[str, str]]) -> None:
        labels = {path: label for label, path in entries}
        current = entries[0][0]  # tail prints no header for a single file
        argv = ["tail", "-F", "-n", str(lines), *labels]
        for line in cluster.conn(host).follow(argv):
            if line.startswith("==> ") and line.rstrip().endswith(" <=="):
                current = labels.get(line.rstrip()[4:-4], current)
                continue
            if line.strip():
                merged.put(f"{current} | {line.rstrip()}")

    for host, entries in files.items():
        threading.Thread(target=pump, args=(host, entries), daemon=True).start()
    while True:  # until Ctrl-C, which exits 130 like every interrupted command
        sys.stdout.write(merged.get() + "\n")
        sys.stdout.flush()

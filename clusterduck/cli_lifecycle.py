"""The commands that run things: ``up``, ``status``, ``down``, ``logs``, ``list``.

Registered on the ``clusterduck`` group by ``cli.py``; like it, these are the only
places that print or choose exit codes.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from . import deploy
from .console import HostProgress, list_table, status_table, throughput_table
from .exceptions import ClusterduckError, RuntimeFault
from .loader import load
from .state import TopologyRecord, find, load_all
from .topology import Topology

__all__ = ["down", "list_topologies", "logs", "status", "up"]

ENDED = ("finished", "failed", "stopped")
DOWN_TIMEOUT = 30.0


def _handle(command: Any) -> Any:
    from .cli import handle_errors  # late: cli imports this module

    return handle_errors(command)


def _console(err: bool = False) -> Console:
    console = Console(stderr=err, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # a pipe or a file: never truncate the table
        console = Console(stderr=err, highlight=False, soft_wrap=False, width=200)
    return console


def _sink_output(record: TopologyRecord, lines: int = 15) -> list[tuple[str, str]]:
    """The last lines each sink instance printed: what a finished topology produced."""
    topo = Topology.model_validate(record.topology)
    cluster = deploy.Cluster(record)
    shown = []
    try:
        for comp in topo.sinks():
            for i in range(comp.parallelism):
                host = comp.host_of(i)
                path = f"{record.hosts[host].run_dir}/logs/{comp.name}.{i}.log"
                try:
                    text = _tail(cluster, host, path, lines)
                except ClusterduckError:
                    continue
                if text.strip():
                    shown.append((f"{comp.name}/{i}", text))
    finally:
        cluster.close()
    return shown


def _tail(cluster: deploy.Cluster, host: str, path: str, lines: int) -> str:
    """The last lines of a file on its host (``tail`` there: nothing else crosses SSH)."""
    return cluster.conn(host).run(["tail", "-n", str(lines), path], timeout=30).stdout


def _stop(record: TopologyRecord, timeout: float, force: bool) -> dict[str, Any]:
    cluster = deploy.Cluster(record)
    try:
        final = cluster.stop(timeout, force=force)
    finally:
        cluster.close()
    if final["state"] == "failed":
        record.status = "failed"
    elif record.status != "finished":  # it was still running: `down` stopped it
        record.status = "stopped"
    final["state"] = record.status
    record.final = final
    record.save()
    return final


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
@_handle
def up(file: Path, mode: str, accept_new_host_keys: bool) -> None:
    """Validate FILE, start every process on every host, and wire them together."""
    tf = load(file)
    topo = tf.topology
    out, err = _console(), _console(err=True)
    with HostProgress(err, topo.hosts_used()) as progress:
        record = deploy.start(tf, progress=progress, accept_new_host_keys=accept_new_host_keys)
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
    for name, text in _sink_output(record):
        out.print(f"[bold]── {name} printed ──[/]")
        out.print(text, markup=False, highlight=False)
    if final["state"] != "finished":
        raise RuntimeFault(
            f"topology {topo.name} ended {final['state']}: "
            + "; ".join(final.get("problems") or [])
            + f" (see `clusterduck logs {topo.name}`)"
        )


def _follow(record: TopologyRecord, out: Console) -> dict[str, Any]:
    """Refresh throughput until the topology ends; Ctrl-C runs a graceful down."""
    status = deploy.topology_status(record)
    try:
        with Live(
            throughput_table(status),
            console=out,
            refresh_per_second=4,
            transient=True,
            auto_refresh=out.is_terminal,
        ) as live:
            while status["state"] not in ENDED and status["state"] != "broken":
                time.sleep(0.5)
                status = deploy.topology_status(record)
                live.update(throughput_table(status))
                if status["state"] in ("failing",):
                    break
    except KeyboardInterrupt:
        # The user asked for it: stop gracefully, show where it got, exit 130.
        _console(err=True).print("interrupted: stopping gracefully (Ctrl-C again to force)")
        try:
            final = _stop(record, DOWN_TIMEOUT, force=False)
        except KeyboardInterrupt:
            final = _stop(record, 0, force=True)
        out.print(status_table(final))
        raise
    if status["state"] not in ("finished",):
        return _stop(record, 5, force=True) | {
            "state": "failed",
            "problems": status.get("problems", []),
        }
    # Finished: make sure nothing lingers (supervisors exit by themselves).
    record.final = status
    record.status = "finished"
    record.save()
    return status


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="The documented JSON schema on stdout.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@_handle
def status(name: str | None, as_json: bool, watch: bool) -> None:
    """Every component and instance: host, pid, state, counters, backlog, rate, errors."""
    record = find(name)
    if as_json:
        click.echo(json.dumps(deploy.topology_status(record), indent=2))
        return
    out = _console()
    if not watch:
        out.print(status_table(deploy.topology_status(record)))
        return
    try:
        with Live(
            status_table(deploy.topology_status(record)), console=out, refresh_per_second=2
        ) as live:
            while True:
                time.sleep(1)
                record = find(record.name)
                live.update(status_table(deploy.topology_status(record)))
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("name", required=False)
@click.option(
    "--timeout",
    type=float,
    default=DOWN_TIMEOUT,
    show_default=True,
    help="Seconds to drain before killing.",
)
@click.option("--force", is_flag=True, help="Kill at once, without draining.")
@_handle
def down(name: str | None, timeout: float, force: bool) -> None:
    """Stop a topology: spouts stop, in-flight messages drain, processes exit."""
    record = find(name)
    err = _console(err=True)
    with err.status(f"stopping {record.name} …") if err.is_terminal else _nothing():
        final = _stop(record, 0 if force else timeout, force)
    counts = sum(r["received"] for c in final["components"] for r in c["instances"])
    err.print(
        f"[green]down[/] {record.name}: {final['state']}; "
        f"{counts:,} messages received in total; logs kept "
        f"(`clusterduck logs {record.name}`)"
    )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@click.command("list")
@_handle
def list_topologies() -> None:
    """Running and finished topologies known to this machine."""
    records = load_all()
    if not records:
        click.echo("no topologies known here; start one with `clusterduck up FILE`")
        return
    for rec in records:  # refresh what is marked running
        if rec.active:
            deploy.topology_status(rec)
    _console().print(list_table(load_all()))


@click.command()
@click.argument("name", required=False)
@click.argument("component", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "lines", type=int, default=20, show_default=True, help="Lines per process.")
@_handle
def logs(name: str | None, component: str | None, follow: bool, lines: int) -> None:
    """Logs of every process (or of COMPONENT), fetched from their hosts."""
    record = find(name)
    topo = Topology.model_validate(record.topology)
    names = [c.name for c in topo.components]
    if component is not None and component not in names + ["supervisor"]:
        raise ClusterduckError(
            f"topology {record.name} has no component {component!r} "
            f"(components: {', '.join(names)}, or 'supervisor')"
        )
    files: dict[str, list[tuple[str, str]]] = {}
    for comp in topo.components:
        if component in (None, comp.name):
            for i in range(comp.parallelism):
                host = comp.host_of(i)
                files.setdefault(host, []).append(
                    (f"{comp.name}/{i}", f"{record.hosts[host].run_dir}/logs/{comp.name}.{i}.log")
                )
    if component in (None, "supervisor"):
        for host, rec in record.hosts.items():
            files.setdefault(host, []).append(
                (f"supervisor@{host}", f"{rec.run_dir}/supervisor.log")
            )
    cluster = deploy.Cluster(record)
    try:
        if follow:
            _follow_logs(cluster, files, lines)
        else:
            for host, entries in files.items():
                for label, path in entries:
                    click.echo(f"==> {label} ({host}:{path}) <==")
                    click.echo(_tail(cluster, host, path, lines).rstrip("\n") or "(empty)")
    finally:
        cluster.close()


def _follow_logs(
    cluster: deploy.Cluster, files: dict[str, list[tuple[str, str]]], lines: int
) -> None:
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
    try:
        while True:
            sys.stdout.write(merged.get() + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass

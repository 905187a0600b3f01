"""The ``clusterduck`` command: the only place that prints for the user or picks exit codes.

Every command is wrapped in :func:`handle_errors`, which turns a ClusterduckError into
plain text on stderr and the error's ``exit_code`` (1 user error, 2 host/process failure).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click

from .exceptions import ClusterduckError, TopologyError
from .graph import FORMATS, render
from .loader import load
from .topology import Topology

__all__ = ["handle_errors", "main"]

F = TypeVar("F", bound=Callable[..., Any])


def _version() -> str:
    try:
        return metadata.version("clusterduck")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def report_error(exc: ClusterduckError) -> None:
    """Write an error for a human on stderr: every located problem, then a count."""
    if isinstance(exc, TopologyError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {_count(len(exc.problems), 'problem')} found", err=True)
    else:
        click.echo(f"error: {exc}", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def handle_errors(command: F) -> F:
    """Turn ClusterduckError into a message on stderr and its exit code; Ctrl-C into 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ClusterduckError as exc:
            report_error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def summary(topology: Topology) -> dict[str, Any]:
    """Counts that ``validate`` prints, in the shape of its ``--json`` output."""
    return {
        "name": topology.name,
        "components": len(topology.components),
        "spouts": len(topology.spouts),
        "workers": len(topology.workers),
        "instances": len(topology.instances()),
        "hosts": topology.hosts_used(),
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="clusterduck")
def main() -> None:
    """Run Storm-like streaming topologies described in YAML, over SSH and ZeroMQ."""


topology_file = click.argument(
    "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE"
)


@main.command()
@topology_file
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@handle_errors
def validate(file: Path, as_json: bool) -> None:
    """Check FILE and its graph and import every entry; exit 1 listing every problem."""
    if not as_json:
        loaded = load(file)
        s = summary(loaded.topology)
        click.echo(
            f"ok: {file}: {_count(s['components'], 'component')} "
            f"({_count(s['spouts'], 'spout')}, {_count(s['workers'], 'worker')}), "
            f"{_count(s['instances'], 'instance')}, {_count(len(s['hosts']), 'host')} "
            f"({', '.join(s['hosts'])})"
        )
        return
    # user modules may print while imported; keep stdout pure JSON
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result = {"ok": True, "errors": [], "summary": summary(load(file).topology)}
        except TopologyError as exc:
            result = {"ok": False, "errors": [p.to_dict() for p in exc.problems],
                      "summary": None}
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    if not result["ok"]:
        sys.exit(TopologyError.exit_code)


@main.command()
@topology_file
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True,
              help="text for a terminal, dot for Graphviz, mermaid for Markdown.")
@handle_errors
def graph(file: Path, fmt: str) -> None:
    """Draw FILE's DAG with each component's kind, flags, parallelism and hosts.

    Entries are not imported, so a graph can be drawn on a machine without the code's
    dependencies; run `clusterduck validate` for the full check.
    """
    click.echo(render(load(file, import_entries=False).topology, fmt), nl=False)


@main.command()
@click.argument("name", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback shows the page to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@handle_errors
def dashboard(name: str | None, host: str, port: int, open_browser: bool) -> None:
    """Serve a live, read-only web page of the topologies (NAME: open that one's page),
    with Prometheus metrics at /metrics."""
    from .dashboard.command import run

    run(name, host, port, open_browser, say=lambda s: click.echo(s),
        warn=lambda s: click.echo(s, err=True))


def _register_lifecycle() -> None:
    from . import cli_lifecycle as lifecycle

    for command in (lifecycle.up, lifecycle.status, lifecycle.down, lifecycle.logs,
                    lifecycle.list_topologies):
        main.add_command(command)


_register_lifecycle()

"""The commands that start nothing: ``validate``, ``schema``, ``graph``, and the read-only
``dashboard`` (a web page over what ``status``, ``list`` and ``logs`` read)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from ..exceptions import TopologyError
from .errors import handle_errors

__all__ = ["dashboard", "graph", "schema", "validate"]

# graph.FORMATS, written here too so that `--help` does not import pydantic
# (tests/test_cli_package.py checks that both agree).
GRAPH_FORMATS = ("text", "dot", "mermaid")


topology_file = click.argument(
    "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE"
)

# reports.FORMATS, likewise kept here for a light `--help` (checked by the same test).
REPORT_FORMATS = ("text", "json", "github")


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(REPORT_FORMATS),
    default="text",
    show_default=True,
    help="text for people, json for programs, github for Actions annotations.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--no-import",
    is_flag=True,
    help="Check the YAML, keys, values and graph, but import no entry (for hooks).",
)
@click.option(
    "--only-topologies",
    is_flag=True,
    help="Skip named files without a top-level spouts: or workers: key.",
)
@handle_errors
def validate(
    paths: tuple[str, ...], fmt: str, as_json: bool, no_import: bool, only_topologies: bool
) -> None:
    """Check topology files (folders: every topology inside); exit 1 if any has a problem."""
    from ..reports import check_paths, render

    with contextlib.redirect_stdout(sys.stderr):  # user modules may print while imported
        results = check_paths(paths, import_entries=not no_import, only_topologies=only_topologies)
    out, err = render(results, "json" if as_json else fmt)
    click.echo(out, nl=False)
    click.echo(err, nl=False, err=True)
    if not all(r.ok for r in results):
        sys.exit(TopologyError.exit_code)


@click.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of a topology file (for editors: see the README)."""
    from ..schema import topology_schema

    click.echo(json.dumps(topology_schema(), indent=2, ensure_ascii=False))


@click.command()
@topology_file
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(GRAPH_FORMATS),
    default="text",
    show_default=True,
    help="text for a terminal, dot for Graphviz, mermaid for Markdown.",
)
@handle_errors
def graph(file: Path, fmt: str) -> None:
    """Draw FILE's DAG with each component's kind, flags, parallelism and hosts.

    Entries are not imported, so a graph can be drawn on a machine without the code's
    dependencies; run `clusterduck validate` for the full check.
    """
    from ..graph import render
    from ..loader import load

    click.echo(render(load(file, import_entries=False).topology, fmt), nl=False)


@click.command()
@click.argument("name", required=False)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback shows the page to the network.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@handle_errors
def dashboard(name: str | None, host: str, port: int, open_browser: bool) -> None:
    """Serve a live, read-only web page of the topologies (NAME: open that one's page),
    with Prometheus metrics at /metrics."""
    from ..dashboard.command import run

    run(
        name,
        host,
        port,
        open_browser,
        say=lambda s: click.echo(s),
        warn=lambda s: click.echo(s, err=True),
    )

"""The commands that read a topology file and start nothing: ``validate`` and ``graph``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..exceptions import TopologyError
from .errors import count, handle_errors

if TYPE_CHECKING:
    from ..topology import Topology

__all__ = ["graph", "summary", "validate"]

# graph.FORMATS, written here too so that `--help` does not import pydantic
# (tests/test_cli_package.py checks that both agree).
GRAPH_FORMATS = ("text", "dot", "mermaid")


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


topology_file = click.argument(
    "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE"
)


@click.command()
@topology_file
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@handle_errors
def validate(file: Path, as_json: bool) -> None:
    """Check FILE and its graph and import every entry; exit 1 listing every problem."""
    from ..loader import load

    if not as_json:
        loaded = load(file)
        s = summary(loaded.topology)
        click.echo(
            f"ok: {file}: {count(s['components'], 'component')} "
            f"({count(s['spouts'], 'spout')}, {count(s['workers'], 'worker')}), "
            f"{count(s['instances'], 'instance')}, {count(len(s['hosts']), 'host')} "
            f"({', '.join(s['hosts'])})"
        )
        return
    # user modules may print while imported; keep stdout pure JSON
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result = {"ok": True, "errors": [], "summary": summary(load(file).topology)}
        except TopologyError as exc:
            result = {"ok": False, "errors": [p.to_dict() for p in exc.problems], "summary": None}
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    if not result["ok"]:
        sys.exit(TopologyError.exit_code)


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

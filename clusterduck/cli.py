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
from .reports import FORMATS as REPORT_FORMATS
from .reports import check_paths
from .reports import render as render_report
from .schema import topology_schema

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="clusterduck")
def main() -> None:
    """Run Storm-like streaming topologies described in YAML, over SSH and ZeroMQ."""


topology_file = click.argument(
    "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE"
)


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--format", "-f", "fmt", type=click.Choice(REPORT_FORMATS), default="text",
              show_default=True,
              help="text for people, json for programs, github for Actions annotations.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--no-import", is_flag=True,
              help="Check the YAML, keys, values and graph, but import no entry (for hooks).")
@click.option("--only-topologies", is_flag=True,
              help="Skip named files without a top-level spouts: or workers: key.")
@handle_errors
def validate(paths: tuple[str, ...], fmt: str, as_json: bool, no_import: bool,
             only_topologies: bool) -> None:
    """Check topology files (folders: every topology inside); exit 1 if any has a problem."""
    with contextlib.redirect_stdout(sys.stderr):  # user modules may print while imported
        results = check_paths(paths, import_entries=not no_import,
                              only_topologies=only_topologies)
    out, err = render_report(results, "json" if as_json else fmt)
    click.echo(out, nl=False)
    click.echo(err, nl=False, err=True)
    if not all(r.ok for r in results):
        sys.exit(TopologyError.exit_code)


@main.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of a topology file (for editors: see the README)."""
    click.echo(json.dumps(topology_schema(), indent=2, ensure_ascii=False))


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


def _register_lifecycle() -> None:
    from . import cli_lifecycle as lifecycle

    for command in (lifecycle.up, lifecycle.status, lifecycle.down, lifecycle.logs,
                    lifecycle.list_topologies):
        main.add_command(command)


_register_lifecycle()

"""The ``clusterduck`` click group; every command is defined in its own module."""

from __future__ import annotations

import atexit
import gc

import click

from . import inspect, lifecycle

__all__ = ["main"]

# The interpreter's teardown collects every object a command created or imported
# (pydantic's schemas, rich, the topology): 0.1-0.2 s after the command has finished.
# Frozen objects are skipped by that last collection; the OS takes the memory back.
atexit.register(gc.freeze)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "--version", "-V", package_name="clusterduck", prog_name="clusterduck")
def main() -> None:
    """Run Storm-like streaming topologies described in YAML, over SSH and ZeroMQ."""


for _command in (
    inspect.validate,
    inspect.schema,
    inspect.graph,
    lifecycle.up,
    lifecycle.status,
    lifecycle.down,
    lifecycle.logs,
    lifecycle.list_topologies,
    inspect.dashboard,
):
    main.add_command(_command)

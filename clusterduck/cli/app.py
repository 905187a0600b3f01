"""The ``clusterduck`` click group; every command is defined in its own module."""

from __future__ import annotations

import atexit
import gc
import logging
from typing import Any

import click

from . import inspect, lifecycle

__all__ = ["main"]

# The interpreter's teardown collects every object a command created or imported
# (pydantic's schemas, rich, the topology): 0.1-0.2 s after the command has finished.
# Frozen objects are skipped by that last collection; the OS takes the memory back.
atexit.register(gc.freeze)

# paramiko logs every failed handshake with a traceback; with no handler configured,
# Python's last-resort handler prints it on stderr above our own one-line error (which
# names the host and the fix). The library's logs stay available to anyone who
# configures logging; the CLI itself shows only its own messages.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class _Group(click.Group):
    """The group, with click's usage errors (unknown command or option, a missing or bad
    argument) exiting 1 like every other user error: exit 2 means a host or process
    failed (docs/reference.md, exit codes). Both places click raises them are here:
    parsing the group's own arguments, and resolving and parsing a command's."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            exc.exit_code = 1
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = 1
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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

"""Errors become text and exit codes here, and nowhere else (1 user error, 2 host or
process failure, 130 interrupted)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..exceptions import ClusterduckError, TopologyError

__all__ = ["count", "handle_errors", "report_error"]

F = TypeVar("F", bound=Callable[..., Any])


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def report_error(exc: ClusterduckError) -> None:
    """Write an error for a human on stderr: every located problem, then a count."""
    if isinstance(exc, TopologyError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {count(len(exc.problems), 'problem')} found", err=True)
    else:
        click.echo(f"error: {exc}", err=True)


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

"""The ``clusterduck`` command: the only place that prints for the user or picks exit codes.

    app.py        the click group; registers every command (imports nothing heavy)
    errors.py     ClusterduckError → message on stderr and exit code, at the edge
    inspect.py    validate, graph: read a file, start nothing
    lifecycle.py  up, status, down, logs, list: drive ``deploy``
    console.py    rich tables and live progress (the only rich user)

Commands import what they need when they run, so ``clusterduck --help`` loads click
and nothing else of weight (no pydantic, paramiko or zmq).
"""

from __future__ import annotations

from .app import main
from .errors import handle_errors, report_error

__all__ = ["handle_errors", "main", "report_error"]

"""The ``clusterduck`` command's entry point: Ctrl-C while it starts exits quietly.

Importing the CLI (click, then what a command needs) takes a noticeable moment, and a
Ctrl-C in it used to print a Python traceback. Here the import and the command run
inside one ``try``: an interrupt anywhere in them exits with 130, as a shell expects
of an interrupted command. (The commands themselves report their own interruptions,
``cli/errors.py``.) This module imports nothing, so only the interpreter's start and
the ``clusterduck`` package's ``__init__`` come before it.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command killed by Ctrl-C


def main() -> None:
    """Import the command line, run it, and turn a Ctrl-C into a quiet exit 130."""
    try:
        from .cli.app import main as cli

        cli(prog_name="clusterduck")
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)

"""Start this machine's supervisor interpreter while ``up`` is still validating.

A supervisor's start is an interpreter start plus the runtime's imports (about a quarter
of a second); ``up`` spends about as long importing pydantic and validating the file.
With two cores both run at once: ``up`` starts ``python -m
clusterduck.runtime.supervisor`` first, with nothing on its stdin yet, and hands it the
spec once the file is valid (``deploy._start_supervisor``).

The supervisor's command line carries the topology's name (the marker that sweeps look
for), which only validation makes sure of. So the name is guessed here from the file's
top-level ``name:`` line, with ``${VAR}`` and ``${VAR:-default}`` expanded, and the
early interpreter is used only when its command line is exactly the one ``deploy``
would run; otherwise it is killed, which is harmless: before it has read a spec it has
done nothing. A file that names hosts (any ``host:`` or ``hosts:`` key) is not guessed
at, since its components may all run elsewhere. Standard library only: this runs before
``up`` imports anything of weight.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .launch.spawn import start_piped
from .protocol import topology_marker

__all__ = ["EarlySupervisor", "guess_name"]

_MAX_BYTES = 256 * 1024  # larger files are refused by the loader anyway
_HOSTS = re.compile(r"^[ \t]*(?:-[ \t]*)?hosts?[ \t]*:", re.MULTILINE)
_NAME = re.compile(r"^name[ \t]*:[ \t]*(?P<value>[^#\n]*?)[ \t]*(?:#.*)?$", re.MULTILINE)
_VAR = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]+$")


def guess_name(text: str, environ: Mapping[str, str]) -> str | None:
    """The topology name a local-only file declares, or None when unsure."""
    if _HOSTS.search(text):
        return None
    match = _NAME.search(text)
    if match is None:
        return None
    value = match.group("value").strip("'\"")
    unset = False

    def substitute(var: re.Match[str]) -> str:
        nonlocal unset
        found = environ.get(var.group("var"))
        if found:
            return found
        if var.group("default") is not None:
            return var.group("default")
        unset = True
        return ""

    name = _VAR.sub(substitute, value)
    return name if not unset and _PLAIN.match(name) else None


class EarlySupervisor:
    """A supervisor interpreter started before validation, waiting for its spec."""

    def __init__(self, argv: list[str], popen: subprocess.Popen[bytes]) -> None:
        self.argv = argv
        self.popen: subprocess.Popen[bytes] | None = popen

    @classmethod
    def start(cls, path: Path) -> EarlySupervisor | None:
        """Start one for the topology file at ``path``, when its name can be guessed."""
        try:
            with open(path, "rb") as fh:
                text = fh.read(_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            return None
        name = guess_name(text, os.environ)
        if name is None:
            return None
        argv = [sys.executable, "-m", "clusterduck.runtime.supervisor", *topology_marker(name)]
        try:
            popen = start_piped(argv)  # as LocalHost.run starts it
        except OSError:
            return None
        return cls(argv, popen)

    def take(self, argv: list[str]) -> subprocess.Popen[bytes] | None:
        """The waiting interpreter, if ``argv`` is exactly what it runs (once)."""
        if self.popen is None or argv != self.argv:
            return None
        popen, self.popen = self.popen, None
        return popen

    def discard(self) -> None:
        """Kill it if nobody took it: it has read no spec, so it started nothing."""
        if self.popen is None:
            return
        popen, self.popen = self.popen, None
        with contextlib.suppress(ProcessLookupError):
            popen.kill()
        popen.communicate()

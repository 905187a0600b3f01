"""Which files ``validate`` checks: files named on the command line, topologies in folders.

A folder holds more YAML than topologies (CI workflows, compose files), so inside one only
files that *look like* a topology are taken: ``*.yaml``/``*.yml`` with a top-level
``spouts:`` or ``workers:`` key, read cheaply as text (no YAML parsing). A named file is
always checked, unless ``only_topologies`` asks for the same test (the pre-commit hook,
which is handed every changed YAML file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .exceptions import Problem

__all__ = ["Found", "find_topologies", "looks_like_topology"]

SUFFIXES = (".yaml", ".yml")
_TOP_LEVEL_KEY = re.compile(rb"^(?:spouts|workers)[ \t]*:", re.MULTILINE)
_SNIFF_BYTES = 1024 * 1024  # the loader refuses far less; enough to see the keys


@dataclass(frozen=True)
class Found:
    """What the command line named: the files to check, and arguments that are wrong."""

    files: list[str]
    problems: list[Problem]


def looks_like_topology(path: Path) -> bool:
    """True when the file has a top-level ``spouts:`` or ``workers:`` key."""
    try:
        with path.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError:
        return False
    return _TOP_LEVEL_KEY.search(head) is not None


def find_topologies(arguments: Iterable[str], *, only_topologies: bool = False) -> Found:
    """Files to validate, in the order given, each once; folders searched recursively."""
    files: dict[str, None] = {}
    problems: list[Problem] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            inside = [str(p) for p in _walk(path) if looks_like_topology(p)]
            if not inside:
                problems.append(
                    Problem(
                        argument,
                        None,
                        None,
                        "no topology file in this folder",
                        "a topology is a *.yaml or *.yml file with a top-level spouts: key",
                    )
                )
            files.update(dict.fromkeys(inside))
        elif not only_topologies or (path.suffix in SUFFIXES and looks_like_topology(path)):
            files[argument] = None  # a missing file is reported by the loader
    return Found(list(files), problems)


def _walk(folder: Path) -> list[Path]:
    """YAML files under ``folder``, sorted; hidden folders (.git, .venv, …) are not entered."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        found += [Path(root, n) for n in sorted(names) if n.endswith(SUFFIXES)]
    return found

"""What ``validate`` found in each file, and the three forms it is printed in.

- ``text``: for people. ``ok: FILE: counts`` on stdout per good file; every problem as
  ``FILE:LINE:COL: [component] message`` and an indented hint on stderr.
- ``json``: for programs. One document on stdout: ``{"ok", "files": [{"file", "ok",
  "summary"}], "problems": [{"file", "line", "column", "component", "message", "hint"}]}``
  (``line``/``column`` are 1-based, ``null`` when a problem concerns the whole file).
- ``github``: GitHub Actions workflow commands, ``::error file=F,line=L,col=C::message``,
  one per problem, which the runner turns into annotations on the pull request's lines.
  Data and properties are escaped as the Actions toolkit does (``%``, CR, LF; and ``:``,
  ``,`` in properties), so a message cannot end the command early or forge another one.

Nothing here prints: :func:`render` returns the stdout and stderr text for the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .discovery import find_topologies
from .exceptions import Problem, TopologyError
from .loader import load
from .topology import Topology

__all__ = ["FORMATS", "FileResult", "check_paths", "github_annotation", "render", "summary"]

FORMATS = ("text", "json", "github")


@dataclass(frozen=True)
class FileResult:
    """One file (or command-line argument) and what validating it found."""

    file: str
    problems: list[Problem]
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def summary(topology: Topology) -> dict[str, Any]:
    """Counts of a valid topology, as ``ok:`` lines and the json ``summary`` give them."""
    return {
        "name": topology.name,
        "components": len(topology.components),
        "spouts": len(topology.spouts),
        "workers": len(topology.workers),
        "instances": len(topology.instances()),
        "hosts": topology.hosts_used(),
    }


def check_paths(
    paths: Iterable[str], *, import_entries: bool = True, only_topologies: bool = False
) -> list[FileResult]:
    """Validate every file the arguments name (folders: the topologies inside), in order."""
    found = find_topologies(paths, only_topologies=only_topologies)
    results = [FileResult(p.file, [p]) for p in found.problems]
    for file in found.files:
        try:
            loaded = load(file, import_entries=import_entries)
        except TopologyError as exc:
            results.append(FileResult(file, exc.problems))
        else:
            results.append(FileResult(file, [], summary(loaded.topology)))
    return results


def render(results: list[FileResult], fmt: str) -> tuple[str, str]:
    """(stdout, stderr) text of ``results`` in format ``fmt`` (one of FORMATS)."""
    if fmt == "json":
        return _json(results), ""
    if fmt == "github":
        lines = [github_annotation(p) for r in results for p in r.problems]
        return "".join(line + "\n" for line in lines), _closing(results)
    return _text(results)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _closing(results: list[FileResult]) -> str:
    problems = sum(len(r.problems) for r in results)
    if not problems:
        return ""
    if len(results) == 1:
        return f"error: {_count(problems, 'problem')} found\n"
    failed = sum(not r.ok for r in results)
    return f"error: {_count(problems, 'problem')} found in {failed} of {len(results)} files\n"


def _text(results: list[FileResult]) -> tuple[str, str]:
    out, err = [], []
    for result in results:
        if result.summary is not None:
            s = result.summary
            out.append(
                f"ok: {result.file}: {_count(s['components'], 'component')} "
                f"({_count(s['spouts'], 'spout')}, {_count(s['workers'], 'worker')}), "
                f"{_count(s['instances'], 'instance')}, {_count(len(s['hosts']), 'host')} "
                f"({', '.join(s['hosts'])})\n"
            )
        err += [f"{problem}\n" for problem in result.problems]
    return "".join(out), "".join(err) + _closing(results)


def _json(results: list[FileResult]) -> str:
    document = {
        "ok": all(r.ok for r in results),
        "files": [{"file": r.file, "ok": r.ok, "summary": r.summary} for r in results],
        "problems": [p.to_dict() for r in results for p in r.problems],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def github_annotation(problem: Problem) -> str:
    """``problem`` as a GitHub Actions ``::error`` workflow command."""
    props = [("file", problem.file)]
    if problem.line is not None:
        props.append(("line", str(problem.line)))
        if problem.column is not None:
            props.append(("col", str(problem.column)))
    who = f"[{problem.component}] " if problem.component else ""
    message = who + problem.message + (f"\nhint: {problem.hint}" if problem.hint else "")
    joined = ",".join(f"{key}={_escape_property(value)}" for key, value in props)
    return f"::error {joined}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")

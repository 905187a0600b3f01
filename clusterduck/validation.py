"""The graph rules of a topology file (docs/reference.md §2), each reported as a located Problem.

The checks run on the raw YAML data rather than on a ``Topology`` so that one run finds
everything: a typo'd key that makes pydantic reject a worker must not hide the cycle or
the unknown input next to it. Rules of a single value (name syntax, parallelism >= 1)
are pydantic's; ``loader.py`` maps those onto lines.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .entries import EntryError, bind_problem, init_problem, positional_range, resolve_entry
from .exceptions import Problem
from .topology import LOCALHOST, Topology

__all__ = ["Report", "YamlPath", "check", "check_topology"]

YamlPath = tuple[Any, ...]
Position = tuple[int, int]


@dataclass
class Report:
    """Collects the problems of one file, located through the loader's node positions.

    ``values`` maps a path such as ``("workers", 2, "inputs", 0)`` to the 1-based
    (line, column) of that node, ``keys`` to the position of the mapping key naming it.
    A problem on a path marked ``poison`` hides later problems at or below that path, so
    one bad ``${VAR}`` does not also show up as an invalid entry.
    """

    file: str
    values: Mapping[YamlPath, Position] = field(default_factory=dict)
    keys: Mapping[YamlPath, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    poisoned: set[YamlPath] = field(default_factory=set)
    paths: list[YamlPath] = field(default_factory=list)

    def where(self, path: YamlPath, *, at_key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path``, or of its closest ancestor present in the file."""
        if at_key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.values:
                return self.values[prefix]
        return None, None

    def add(
        self,
        path: YamlPath,
        message: str,
        hint: str = "",
        component: str | None = None,
        *,
        at_key: bool = False,
        poison: bool = False,
        at: Position | None = None,
    ) -> None:
        """Record a problem at ``path`` (its key with ``at_key``), or exactly ``at``."""
        if any(path[: len(bad)] == bad for bad in self.poisoned):
            return
        if poison:
            self.poisoned.add(path)
        line, column = at or self.where(path, at_key=at_key)
        self.problems.append(Problem(self.file, line, column, message, hint, component))
        self.paths.append(path)

    def sorted(self, data: Any = None) -> list[Problem]:
        """Problems in file order, naming the component of any found inside one."""
        named = [
            p if p.component else replace(p, component=_component_at(data, path))
            for p, path in zip(self.problems, self.paths, strict=True)
        ]
        return sorted(named, key=lambda p: (p.line or 0, p.column or 0))


def _component_at(data: Any, path: YamlPath) -> str | None:
    if isinstance(data, Mapping) and len(path) >= 2 and path[0] in ("spouts", "workers"):
        items = data.get(path[0])
        if isinstance(items, list) and isinstance(path[1], int) and path[1] < len(items):
            item = items[path[1]]
            name = item.get("name") if isinstance(item, Mapping) else None
            return name if isinstance(name, str) else None
    return None


@dataclass(frozen=True)
class _Comp:
    """A lenient view of one spout or worker mapping, whatever its other errors."""

    kind: str
    path: YamlPath
    raw: Mapping[str, Any]

    @property
    def name(self) -> str | None:
        name = self.raw.get("name")
        return name if isinstance(name, str) else None

    def get(self, key: str, types: type | tuple[type, ...], default: Any) -> Any:
        value = self.raw.get(key, default)
        return value if isinstance(value, types) and not _is_bool_int(value, types) else default

    def inputs(self) -> list[tuple[int, str]]:
        raw = self.raw.get("inputs")
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            return []
        return [(i, v) for i, v in enumerate(raw) if isinstance(v, str)]

    def hosts(self) -> list[tuple[YamlPath, str]]:
        raw = self.raw.get("host")
        if isinstance(raw, str):
            return [((*self.path, "host"), raw)]
        if isinstance(raw, list):
            return [((*self.path, "host", i), h) for i, h in enumerate(raw) if isinstance(h, str)]
        return []


def _is_bool_int(value: Any, types: type | tuple[type, ...]) -> bool:
    return isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))


def check(raw: Mapping[str, Any], report: Report, *, code_dir: Path | None = None) -> None:
    """Add every graph problem of the file's data to ``report``; import entries if code_dir."""
    comps = _components(raw)
    _check_names(comps, report)
    _check_inputs(comps, report)
    _check_hosts(raw.get("hosts"), comps, report)
    _check_flags(comps, report)
    _check_cycles(comps, report)
    if code_dir is not None:
        for comp in comps:
            _check_entries(comp, code_dir, report)


def check_topology(topology: Topology, code_dir: Path | None = None) -> list[Problem]:
    """Problems of a Topology built in code (no file, so no lines)."""
    report = Report(file=f"<topology {topology.name}>")
    check(topology.model_dump(mode="python"), report, code_dir=code_dir)
    return report.sorted()


def _components(raw: Mapping[str, Any]) -> list[_Comp]:
    comps = []
    for section, kind in (("spouts", "spout"), ("workers", "worker")):
        items = raw.get(section)
        if isinstance(items, (list, tuple)):
            comps += [
                _Comp(kind, (section, i), c) for i, c in enumerate(items) if isinstance(c, Mapping)
            ]
    return comps


def _check_names(comps: list[_Comp], report: Report) -> None:
    first: dict[str, _Comp] = {}
    for comp in comps:
        if comp.name is None:
            continue
        if comp.name in first:
            line, _ = report.where((*first[comp.name].path, "name"))
            report.add(
                (*comp.path, "name"),
                f"duplicate name {comp.name!r}",
                f"rename one of them; {comp.name!r} is first defined on line {line}",
                comp.name,
            )
        else:
            first[comp.name] = comp


def _check_inputs(comps: list[_Comp], report: Report) -> None:
    names = list(dict.fromkeys(c.name for c in comps if c.name))
    for comp in comps:
        inputs = comp.inputs()
        if comp.kind == "spout":
            if inputs or comp.raw.get("inputs"):
                report.add(
                    (*comp.path, "inputs"),
                    "a spout takes no inputs",
                    "remove inputs:, or move it under workers: to consume other components",
                    comp.name,
                    at_key=True,
                )
            continue
        seen: set[str] = set()
        for index, name in inputs:
            path = (*comp.path, "inputs", index)
            if name in seen:
                report.add(
                    path, f"input {name!r} is listed twice", "list each input once", comp.name
                )
            seen.add(name)
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else "inputs name spouts or workers of this file: " + _few(names)
                )
                report.add(path, f"input {name!r} names no spout or worker", hint, comp.name)


def _few(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def _check_hosts(hosts: Any, comps: list[_Comp], report: Report) -> None:
    if hosts is not None and not isinstance(hosts, Mapping):
        return  # pydantic reports the shape
    declared = set(hosts or {}) | {LOCALHOST}
    for comp in comps:
        for path, host in comp.hosts():
            if host not in declared:
                close = difflib.get_close_matches(host, sorted(declared), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"declare {host!r} under hosts:, or use {LOCALHOST}"
                )
                report.add(path, f"host {host!r} is not declared under hosts:", hint, comp.name)
    for name, entry in (hosts or {}).items():
        if isinstance(entry, Mapping):
            _check_slurm_group(str(name), entry, report)


_SSH_ONLY = ("address", "user", "port", "identity_file")


def _check_slurm_group(name: str, entry: Mapping[str, Any], report: Report) -> None:
    """A Slurm group is reached through the scheduler, never by SSH: no address keys."""
    if entry.get("slurm") is None:
        if "shared_fs" in entry:
            report.add(
                ("hosts", name, "shared_fs"),
                "shared_fs applies only to a Slurm group",
                "add a slurm: {nodes: ...} entry to this host, or remove shared_fs",
                at_key=True,
            )
        return
    if name == LOCALHOST:
        report.add(
            ("hosts", name, "slurm"),
            "localhost cannot be a Slurm group",
            "give the group its own name (e.g. `cluster:`) and place components on it",
            at_key=True,
        )
    for key in _SSH_ONLY:
        if key in entry:
            report.add(
                ("hosts", name, key),
                f"{key!r} does not apply to a Slurm group",
                "a Slurm group's machines are chosen by the scheduler; remove "
                f"{key!r} (sbatch runs on this machine)",
                at_key=True,
            )


def _check_flags(comps: list[_Comp], report: Report) -> None:
    for comp in comps:
        if comp.kind != "worker":
            continue
        bundle = comp.get("bundle", bool, False)
        sequential = comp.get("sequential", bool, False)
        parallelism = comp.get("parallelism", int, 1)
        grouping = comp.get("grouping", str, "shuffle")
        here = comp.path
        if sequential and parallelism > 1:
            report.add(
                (*here, "sequential"),
                "sequential needs parallelism: 1",
                "strict order is kept by one instance; set parallelism: 1",
                comp.name,
                at_key=True,
            )
        if sequential and not bundle and len(comp.inputs()) > 1:
            report.add(
                (*here, "sequential"),
                "sequential on a worker with several inputs",
                "add bundle: true to order bundles, or keep a single input",
                comp.name,
                at_key=True,
            )
        if grouping == "key" and comp.raw.get("key") is None:
            report.add(
                (*here, "grouping"),
                "grouping: key without key:",
                "add key: module:function mapping a value to its key",
                comp.name,
                at_key=True,
            )
        if grouping != "key" and comp.raw.get("key") is not None:
            report.add(
                (*here, "key"),
                f"key: is only used with grouping: key (not {grouping})",
                "add grouping: key, or remove key:",
                comp.name,
                at_key=True,
            )
        if bundle and grouping == "key":
            report.add(
                (*here, "grouping"),
                "a bundled worker cannot use grouping: key",
                "bundles are routed by sequence id; remove grouping: key",
                comp.name,
                at_key=True,
            )


def _check_cycles(comps: list[_Comp], report: Report) -> None:
    by_name: dict[str, _Comp] = {}
    for comp in comps:
        if comp.name is not None:
            by_name.setdefault(comp.name, comp)
    edges = {
        name: [i for _, i in by_name[name].inputs() if i in by_name]
        for name in by_name
        if by_name[name].kind == "worker"
    }
    reach = {name: _reachable(name, edges) for name in by_name}
    reported: set[str] = set()
    for name in by_name:  # file order: the first member of each loop carries the report
        if name in reported or name not in reach[name]:
            continue
        members = [m for m in by_name if m in reach[name] and name in reach[m]]
        reported.update(members)
        upstream = _shortest_loop(name, edges, set(members))
        loop = [name, *upstream[:0:-1]]  # in the direction data would flow
        text = " → ".join([*loop, name])
        others = [m for m in members if m not in loop]
        extra = f"; also in the loop: {', '.join(others)}" if others else ""
        report.add(
            (*by_name[name].path, "inputs"),
            f"cycle: {text}{extra}",
            f"a topology is a DAG: drop one input among {', '.join(members)}",
            name,
            at_key=True,
        )


def _reachable(start: str, edges: Mapping[str, Sequence[str]]) -> set[str]:
    """Names reachable from ``start`` by following inputs upstream (one step or more)."""
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return seen


def _shortest_loop(start: str, edges: Mapping[str, Sequence[str]], within: set[str]) -> list[str]:
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for up in edges.get(node, ()):
                if up == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if up in within and up not in parents:
                    parents[up] = node
                    nxt.append(up)
        frontier = nxt
    return [start]


def _check_entries(comp: _Comp, code_dir: Path, report: Report) -> None:
    entry = comp.get("entry", str, None)
    if entry is None or ":" not in entry:
        return  # missing or malformed: pydantic reports it
    try:
        obj = resolve_entry(entry, code_dir)
    except EntryError as exc:
        report.add((*comp.path, "entry"), exc.message, exc.hint, comp.name)
        return
    args = comp.get("args", dict, {})
    args_path = (*comp.path, "args") if "args" in comp.raw else (*comp.path, "entry")
    if isinstance(obj, type):
        why = init_problem(obj, args)
        if why:
            report.add(
                args_path,
                f"{entry}(**args) fails: {why}",
                "a class entry is instantiated once with args; make them match __init__",
                comp.name,
                at_key="args" in comp.raw,
            )
        args = {}
    if comp.kind == "spout":
        why = bind_problem(obj, 1, args)
        _report_bind(
            report,
            comp,
            entry,
            why,
            "dispatch, **args" if args else "dispatch",
            _args_hint(why, args, entry.rpartition(":")[2], "dispatch")
            or "a spout is called as spout(dispatch, **args)",
        )
    elif comp.get("bundle", bool, False):
        _check_bundle_arity(comp, entry, obj, args, report)
    else:
        why = bind_problem(obj, 1, args)
        _report_bind(
            report,
            comp,
            entry,
            why,
            "value, **args" if args else "value",
            _args_hint(why, args, entry.rpartition(":")[2], "value")
            or "a worker is called with one value per message: def fn(value)",
        )
    key = comp.get("key", str, None)
    if key is not None and ":" in key:
        _check_key(comp, key, code_dir, report)


def _check_bundle_arity(
    comp: _Comp, entry: str, obj: object, args: Mapping[str, Any], report: Report
) -> None:
    count = len(comp.inputs())
    try:
        low, high = positional_range(obj)
    except TypeError as exc:
        report.add((*comp.path, "entry"), str(exc), "define __call__ on the class", comp.name)
        return
    if low <= count and (high is None or count <= high):
        _report_bind(
            report,
            comp,
            entry,
            bind_problem(obj, count, args),
            "bundle",
            "a bundled worker is called with one value per input",
        )
        return
    takes = str(low) if low == high else f"{low} to {high}" if high is not None else f"{low}+"
    report.add(
        (*comp.path, "entry"),
        f"bundled worker has {count} inputs but {entry} takes {takes} positional arguments",
        "give it one parameter per input, in the order inputs: lists them",
        comp.name,
    )


def _check_key(comp: _Comp, key: str, code_dir: Path, report: Report) -> None:
    try:
        key_fn = resolve_entry(key, code_dir)
    except EntryError as exc:
        report.add((*comp.path, "key"), exc.message, exc.hint, comp.name)
        return
    if not isinstance(key_fn, type):
        _report_bind(
            report,
            comp,
            key,
            bind_problem(key_fn, 1),
            "value",
            "a key function takes one value and returns a hashable key",
            field="key",
        )


def _args_hint(why: str | None, args: dict[str, Any], name: str, first: str) -> str | None:
    """The fix when a function entry does not take a key of its ``args:``: the runtime
    passes them as keywords on every call, so the signature must name them."""
    if not why or not args or "unexpected keyword argument" not in why:
        return None
    names = ", ".join(args)
    return (
        f"args: are passed as keyword arguments: def {name}({first}, {names}); or remove "
        "from args: what it does not take"
    )


def _report_bind(
    report: Report,
    comp: _Comp,
    entry: str,
    why: str | None,
    called_with: str,
    hint: str,
    field: str = "entry",
) -> None:
    if why:
        report.add(
            (*comp.path, field),
            f"{entry} cannot be called with {called_with}: {why}",
            hint,
            comp.name,
        )

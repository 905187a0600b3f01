"""Read a topology file: YAML with positions, ``${VAR}`` expansion, then every check.

PyYAML alone forgets where a value came from and silently keeps the last of two equal
keys; here every node's line and column are kept by path, duplicate keys are errors, and
each problem (syntax, shape, graph, entries) is reported at once with its location.

Topology files come from version control, so a pull request can carry a hostile one. The
reader is bounded before any of that work: a file larger than ``MAX_FILE_BYTES`` is not
parsed, nodes nest at most ``MAX_DEPTH`` deep, and aliases may add at most
``MAX_ALIAS_NODES`` nodes to the document once expanded (a ten-line "billion laughs" file
asks for 10⁹). The expanded size of every anchored node is computed on the node graph
PyYAML composes (aliases there are shared nodes, so that is linear in the file), and the
refusal names the alias that crossed the budget.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .exceptions import Problem, TopologyError
from .topology import Host, Settings, SlurmRequest, Spout, Topology, Worker
from .validation import Report, YamlPath, check

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "MAX_FILE_BYTES", "TopologyFile", "load"]

MAX_FILE_BYTES = 256 * 1024  # about 4,000 components; parsing that takes about a second
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to the document once expanded
MAX_DEPTH = 64  # nesting of mappings and lists, aliases expanded

_MERGE_TAG = "tag:yaml.org,2002:merge"
# ${NAME}, ${NAME:-default}; "$${" is a literal "${".
_VAR = re.compile(r"\$(?P<escape>\$)(?=\{)|\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TopologyFile:
    """A validated topology and where it came from."""

    path: Path  # absolute path of the YAML file
    topology: Topology
    code_dir: Path  # absolute: path.parent / topology.code, resolved


# The hint for a file with no topology in it: a minimal one, since a pip-installed user
# has no topologies/ folder to start from (each quoted line is a line of the file).
START_FROM = (
    "a minimal topology is three lines: `name: hello`, "
    "`spouts: [{name: numbers, entry: 'mymodule:numbers'}]`, "
    "`workers: [{name: show, entry: 'mymodule:show', inputs: [numbers]}]` "
    '(mymodule.py next to the file; README: "A topology file")'
)


def load(
    path: str | Path, *, import_entries: bool = True, environ: Mapping[str, str] | None = None
) -> TopologyFile:
    """Load and validate ``path``; raise TopologyError listing every problem found."""
    shown = str(path)
    absolute = Path(path).expanduser().resolve()
    text = _read_bounded(absolute, shown)
    report = Report(file=shown)
    data = _YamlReader(text, report, os.environ if environ is None else environ).read()
    if data is None:
        report.add((), "the file is empty", START_FROM)
        raise TopologyError(report.sorted())
    if not isinstance(data, dict):
        report.add(
            (),
            "a topology file must be a mapping of keys (name:, spouts:, …)",
            START_FROM,
        )
        raise TopologyError(report.sorted())

    topology: Topology | None = None
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        typos: dict[tuple[Any, ...], list[str]] = {}
        for error in errors:
            if error["type"] == "extra_forbidden":
                typos.setdefault(tuple(error["loc"][:-1]), []).append(str(error["loc"][-1]))
        for error in errors:
            _report_pydantic(error, data, report, typos)
    code = data.get("code", ".")
    code_dir = (absolute.parent / code).resolve() if isinstance(code, str) else None
    if import_entries and code_dir is not None and not code_dir.is_dir():
        report.add(
            ("code",),
            f"code folder {code_dir} does not exist",
            "code: is relative to the topology file",
            poison=True,
        )
    entries_ok = import_entries and ("code",) not in report.poisoned
    check(data, report, code_dir=code_dir if entries_ok else None)
    if report.problems or topology is None or code_dir is None:
        raise TopologyError(report.sorted(data))
    return TopologyFile(path=absolute, topology=topology, code_dir=code_dir)


def _read_bounded(absolute: Path, shown: str) -> str:
    """The file's text, refused unread when it is larger than MAX_FILE_BYTES."""
    try:
        with absolute.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)  # also bounds a FIFO or a growing file
        if len(data) > MAX_FILE_BYTES:
            size = max(absolute.stat().st_size, len(data))
            problem = Problem(
                shown,
                None,
                None,
                f"the file is {size:,} bytes, more than the {MAX_FILE_BYTES:,}-byte limit "
                "for a topology file",
                "a topology names components; keep data in files the code reads",
            )
            raise TopologyError([problem])
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = Problem(
            shown,
            None,
            None,
            f"cannot read the topology file: {reason}",
            "check the path; a topology file is UTF-8 YAML",
        )
        raise TopologyError([problem]) from exc


class _Refused(Exception):
    """The YAML asks for more than the reader's bounds allow (see the module docstring)."""

    def __init__(self, mark: yaml.Mark, message: str, hint: str) -> None:
        super().__init__(message)
        self.at = (mark.line + 1, mark.column + 1)
        self.message = message
        self.hint = hint


_ALIAS_HINT = (
    "write the values out, or keep large data in a file the code reads "
    "(the limit guards against 'billion laughs' files)"
)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader composing nodes no deeper than MAX_DEPTH, with a budget for aliases."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.alias_nodes = 0
        self.expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            assert node is not None  # an alias names a composed node, or the composer raised
            size, depth = _expanded_size(node, self.expanded)
            self.alias_nodes += size
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise _Refused(
                    mark, f"YAML aliases expand past {MAX_ALIAS_NODES:,} nodes", _ALIAS_HINT
                )
            if self.depth + depth > MAX_DEPTH:
                raise _Refused(
                    mark,
                    f"YAML nested deeper than {MAX_DEPTH} levels once this alias is expanded",
                    _ALIAS_HINT,
                )
            return node
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(
                    mark,
                    f"YAML nested deeper than {MAX_DEPTH} levels",
                    "a topology file needs a few levels; flatten the value",
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(nodes, depth) of ``node`` with aliases expanded: linear, since the graph is shared.

    Iterative, because an alias chain can be longer than Python's recursion limit. A node
    reached from inside itself counts as one (the reader reports the recursion); values
    are capped just past the limits so a billion laughs stays a small integer.
    """
    cap_nodes, cap_depth = MAX_ALIAS_NODES + 1, MAX_DEPTH + 1
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if key in memo:
            continue
        children = _children(current)
        if not children_done:
            open_nodes.add(key)
            stack.append((current, True))
            stack += [(c, False) for c in children if id(c) not in memo and id(c) not in open_nodes]
            continue
        open_nodes.discard(key)
        sizes = [memo.get(id(c), (1, 1)) for c in children]
        memo[key] = (
            min(cap_nodes, 1 + sum(n for n, _ in sizes)),
            min(cap_depth, 1 + max((d for _, d in sizes), default=0)),
        )
    return memo[id(node)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


class _YamlReader:
    """Builds plain Python data from the YAML node tree, recording positions by path."""

    def __init__(self, text: str, report: Report, environ: Mapping[str, str]) -> None:
        self.text = text
        self.report = report
        self.environ = environ
        self.values: dict[YamlPath, tuple[int, int]] = {}
        self.keys: dict[YamlPath, tuple[int, int]] = {}
        report.values, report.keys = self.values, self.keys
        self.loader = _BoundedLoader(text)
        self.building: set[int] = set()

    def read(self) -> Any:
        try:
            node = self.loader.get_single_node()
            return None if node is None else self._build(node, ())
        except _Refused as exc:
            self.report.add((), exc.message, exc.hint, at=exc.at)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            what = str(exc.problem or exc.context)
            if exc.problem and exc.context:
                what += f" ({exc.context})"
            what, hint = _explain_syntax(what)
            at = (mark.line + 1, mark.column + 1) if mark else None
            opened = _unclosed(exc)
            if opened is not None:
                at, hint = opened
            hint = _unquoted_variable(self.text, exc) or hint
            self.report.add((), f"YAML syntax error: {what}", hint, at=at)
        except yaml.YAMLError as exc:
            self.report.add((), f"YAML error: {exc}", "fix the YAML syntax")
        finally:
            self.loader.dispose()
        raise TopologyError(self.report.sorted())

    def _build(self, node: yaml.Node, path: YamlPath) -> Any:
        self.values.setdefault(path, _position(node))
        if id(node) in self.building:
            self.report.add(path, "recursive YAML alias", "an alias cannot contain itself")
            return None
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self._build(item, (*path, i)) for i, item in enumerate(node.value)]
            value = self.loader.construct_object(node, deep=True)
            return self._expand(value, path) if isinstance(value, str) else value
        finally:
            self.building.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged += (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                continue
            key = self.loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                self.report.add(
                    path,
                    "a mapping key must be a plain value",
                    "use a string key",
                    at=_position(key_node),
                )
                continue
            if key in out:
                first = self.keys[(*path, key)][0]
                self.report.add(
                    (*path, key),
                    f"duplicate key {key!r}",
                    f"{key!r} is already set on line {first}; keep one of them",
                    at=_position(key_node),
                )
                continue
            self.keys[(*path, key)] = _position(key_node)
            out[key] = self._build(value_node, (*path, key))
        for merge in merged:  # explicit keys win over merged ones, as YAML says
            extra = self._build(merge, path)
            if isinstance(extra, dict):
                for key, value in extra.items():
                    out.setdefault(key, value)
        return out

    def _expand(self, text: str, path: YamlPath) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group("escape"):
                return "$"
            name, default = match.group("name"), match.group("default")
            if not _VAR_NAME.match(name):
                self.report.add(
                    path,
                    f"invalid variable name in {match.group(0)!r}",
                    "write ${NAME} or ${NAME:-default}",
                    poison=True,
                )
                return match.group(0)
            value = self.environ.get(name)
            if value:
                return value
            if default is not None:
                return default
            if value is None:
                self.report.add(
                    path,
                    f"${{{name}}} is not set",
                    f"export {name}=..., or write ${{{name}:-default}}",
                    poison=True,
                )
            return value or ""

        return _VAR.sub(substitute, text)


# PyYAML names tokens as its grammar does; a person reads "a key", not '?'.
_TOKENS = {
    "'?'": "a key",
    "'<block mapping start>'": "a new mapping",
    "'<block sequence start>'": "a new list",
    "'<block end>'": "the end of a block",
    "<block end>": "the end of the block",
    "'<scalar>'": "a value",
    "'-'": "a list item ('-')",
}
_INDENT = (
    "this line is indented differently from the lines above it: the keys of one item "
    "start in one column, each list item's '-' too (compare with the line above)"
)


def _explain_syntax(what: str) -> tuple[str, str]:
    """PyYAML's message in a person's words, and the hint for the mistake behind it
    (nearly always indentation, a tab, or a ': ' inside an unquoted value)."""
    for token, words in _TOKENS.items():
        what = what.replace(f"found {token}", f"found {words}")
        what = what.replace(f"expected {token}", f"expected {words}")
    if "\\t" in what:
        return what, "indent with spaces, not tabs"
    if "mapping values are not allowed here" in what:
        return what, (
            "a key here is indented deeper than the key above it, or an unquoted value "
            "holds ': ' (quote it); the keys of one item start in one column"
        )
    if "expected the end of" in what or "found a key" in what or "found a new" in what:
        return what, _INDENT
    return what, "fix the YAML at this position (indentation, quotes, colons)"


# What PyYAML's context names, when it is an opening bracket or quote, and its closer.
_OPENERS = {
    "while parsing a flow mapping": ("'{'", "'}'"),
    "while parsing a flow sequence": ("'['", "']'"),
    "while scanning a quoted scalar": ("quote", "the same quote"),
}


def _unclosed(exc: yaml.MarkedYAMLError) -> tuple[tuple[int, int], str] | None:
    """Where to point and the hint when PyYAML gave up inside a ``{``, ``[`` or quote:
    at the end of the file it reports a line past the last one, so the error points at
    the opener instead; elsewhere it keeps PyYAML's place and names the opener."""
    opener = _OPENERS.get(str(exc.context))
    opened, found = exc.context_mark, exc.problem_mark
    if opener is None or opened is None:
        return None
    what, closer = opener
    if found is None or "end of stream" in str(exc.problem) or "<stream end>" in str(exc.problem):
        return (opened.line + 1, opened.column + 1), (
            f"the {what} opened here is never closed: close it with {closer}"
        )
    where = f"line {opened.line + 1}, column {opened.column + 1}"
    return (found.line + 1, found.column + 1), (
        f"close the {what} opened at {where} with {closer} before this point"
    )


def _unquoted_variable(text: str, exc: yaml.MarkedYAMLError) -> str | None:
    """The hint for ``{path: ${VAR}}``: inside ``{ }`` or ``[ ]`` YAML reads the braces of
    an unquoted ``${VAR}`` as its own, and PyYAML then asks to close the outer brace.
    Looks for a ``${`` outside quotes between the opener and where PyYAML gave up."""
    opened, found = exc.context_mark, exc.problem_mark
    if str(exc.context) not in _FLOW or opened is None or found is None:
        return None
    end = text.find("\n", found.index)
    stretch = text[opened.index : len(text) if end < 0 else end]
    for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)?", stretch):
        if match.start() > found.index - opened.index:
            break
        line = stretch[: match.start()].rsplit("\n", 1)[-1]
        if line.count('"') % 2 == 0 and line.count("'") % 2 == 0:  # not inside quotes
            name = match[1] or "VAR"
            return (
                f'quote ${{{name}}} in a {{ }} or [ ] value ("${{{name}}}"): unquoted, YAML '
                "reads its braces as a mapping of its own"
            )
    return None


# PyYAML's context inside ``{ }`` and ``[ ]``.
_FLOW = ("while parsing a flow mapping", "while parsing a flow sequence")


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _lookup(data: Any, loc: tuple[Any, ...]) -> tuple[YamlPath, bool]:
    """The longest prefix of a pydantic ``loc`` present in the data; True if all of it is."""
    node = data
    path: YamlPath = ()
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return path, False
        path = (*path, part)
    return path, True


def _model_at(path: YamlPath) -> type[BaseModel]:
    if len(path) == 2 and path[0] in ("spouts", "workers"):
        return Spout if path[0] == "spouts" else Worker
    if len(path) == 2 and path[0] == "hosts":
        return Host
    if len(path) == 3 and path[0] == "hosts" and path[2] == "slurm":
        return SlurmRequest
    return Settings if path[:1] == ("settings",) else Topology


def _report_pydantic(
    error: Mapping[str, Any],
    data: dict[str, Any],
    report: Report,
    typos: Mapping[tuple[Any, ...], list[str]],
) -> None:
    """One pydantic error as a located problem; a missing key explained by a typo is skipped."""
    loc = tuple(error["loc"])
    path, complete = _lookup(data, loc)
    kind, msg = error["type"], str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing" and not complete and len(loc) > len(path):
        field = str(loc[len(path)])
    else:
        field = next((p for p in reversed(path) if isinstance(p, str)), "topology")
    value = error.get("input")
    if kind == "invalid_key":
        report.add(
            path, f"key {loc[-1]!r} is not a string", "quote the key, or remove it", at_key=True
        )
    elif kind == "extra_forbidden":
        allowed = list(_model_at(path[:-1]).model_fields)
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(allowed)
        report.add(path, f"unknown key {field!r}", hint, at_key=True)
    elif kind == "missing":
        if difflib.get_close_matches(field, typos.get(path, []), n=1):
            return  # "unknown key 'inptus'" already says it
        report.add(
            path, f"missing required key {field!r}", _MISSING_HINTS.get(field, f"add {field}:")
        )
    elif kind == "string_pattern_mismatch" and field == "name":
        report.add(
            path,
            f"invalid name {value!r}",
            "use lowercase letters, digits, '_' or '-', starting with a letter or digit",
        )
    elif kind == "string_pattern_mismatch":
        report.add(
            path,
            f"{field} {value!r} is not module:attr",
            "write it as module:function or module:Class",
        )
    elif field == "parallelism" and kind == "greater_than_equal":
        report.add(
            path, f"parallelism must be at least 1, not {value!r}", "set parallelism: 1 or more"
        )
    elif kind == "too_short" and field in ("inputs", "spouts"):
        what = (
            "a worker needs at least one input"
            if field == "inputs"
            else ("a topology needs at least one spout")
        )
        report.add(path, what, _MISSING_HINTS[field])
    elif kind == "list_type":
        shown = value if isinstance(value, str | int | float) else "..."
        report.add(
            path,
            f"{field} must be a list, not {value!r}",
            f"write {field}: [{shown}] (a YAML list: [a, b])",
        )
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        report.add(
            path,
            f"{field} must be a whole number, not {value!r}",
            f"write it as digits, e.g. {field}: {_INT_EXAMPLES.get(field, 1)}",
        )
    elif kind in ("bool_parsing", "bool_type"):
        report.add(path, f"{field} must be true or false, not {value!r}", f"write {field}: true")
    elif kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        allowed = re.findall(r"'([^']*)'", expected)
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(allowed)}"
        if isinstance(value, bool):  # off, no, on, yes: YAML 1.1 booleans
            hint = f"YAML reads an unquoted off/on/no/yes as {str(value).lower()}; {hint}"
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        report.add(path, f"{field} {shown} is not one of {', '.join(allowed)}", hint)
    else:
        report.add(path, f"{field}: {msg}", f"fix the value of {field} (see docs/reference.md)")


_INT_EXAMPLES = {"parallelism": 4, "port": 22, "sequence_start": 0, "max_pending": 10000}


_MISSING_HINTS = {
    "name": "add name: lowercase letters, digits, '_' or '-'",
    "entry": "add entry: module:function or module:Class",
    "inputs": "add inputs: [...] naming the spouts or workers it consumes",
    "spouts": "add spouts: with at least one spout",
}

"""`clusterduck schema`: the JSON Schema agrees with `validate` on every file the tests hold.

The schema is checked with the ``jsonschema`` package against: the example topologies and
every topology file of the tests (valid ones must pass), every topology written inline in
the test modules (a file `validate` accepts must pass; a file pydantic rejects for a
reason a schema can express must fail), and one bad file per class of mistake.
"""

from __future__ import annotations

import ast
import json
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import EXAMPLES, REPO
from jsonschema import Draft7Validator
from pydantic import BaseModel, ValidationError
from test_validation import CASES

from clusterduck.cli import main
from clusterduck.exceptions import TopologyError
from clusterduck.loader import load
from clusterduck.schema import topology_schema
from clusterduck.topology import Host, Settings, Spout, Topology, Worker

SCHEMA = topology_schema()
VALIDATOR = Draft7Validator(SCHEMA)
TOPOLOGY_FILES = sorted([*EXAMPLES.glob("*.yaml"), *(REPO / "tests").glob("*topologies/*.yaml")])
# pydantic error kinds a JSON Schema states too (not: custom validators' value_error)
EXPRESSIBLE = {
    "missing",
    "extra_forbidden",
    "too_short",
    "literal_error",
    "greater_than_equal",
    "less_than_equal",
    "string_pattern_mismatch",
    "string_type",
    "int_type",
    "int_parsing",
    "float_type",
    "float_parsing",
    "bool_type",
    "bool_parsing",
    "dict_type",
    "list_type",
    "tuple_type",
    "model_type",
    "model_attributes_type",
    "invalid_key",
}


def schema_errors(data: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(data)]


def test_the_schema_is_draft7_with_a_title() -> None:
    Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["title"] == "clusterduck topology" and SCHEMA["description"]


@pytest.mark.parametrize(
    "model, where",
    [
        (Topology, ()),
        (Host, ("definitions", "Host")),
        (Settings, ("definitions", "Settings")),
        (Spout, ("definitions", "Spout")),
        (Worker, ("definitions", "Worker")),
    ],
)
def test_every_key_is_documented_with_its_default(
    model: type[BaseModel], where: tuple[str, ...]
) -> None:
    """A key added to a model needs ``Field(description=...)`` in topology.py: nothing else."""
    node: Mapping[str, Any] = SCHEMA
    for part in where:
        node = node[part]
    assert set(node["properties"]) == set(model.model_fields)
    assert node["additionalProperties"] is False
    for name, field in model.model_fields.items():
        prop = node["properties"][name]
        assert prop.get("description"), f"{model.__name__}.{name}: add Field(description=...)"
        if field.is_required():
            assert name in node["required"] and "default" not in prop
        else:
            default = field.get_default(call_default_factory=True)
            dumped = json.loads(json.dumps(default, default=_plain))
            assert prop["default"] == dumped, f"{model.__name__}.{name}"


def _plain(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value))


def test_the_command_prints_the_schema() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0 and json.loads(result.stdout) == SCHEMA


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_topology_file_of_the_repository_passes(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text())) == []


class AnyVariable(dict[str, str]):
    """An environment in which every ${VAR} is set (to a value valid for any key)."""

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        return "1"


def _inline_topologies() -> Iterator[tuple[str, str]]:
    """(where, text) of every topology written in the test modules."""
    for module in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = textwrap.dedent(node.value).lstrip("\n")
                try:
                    data = yaml.safe_load(text)
                except yaml.YAMLError:
                    continue
                if isinstance(data, dict) and "spouts" in data:
                    yield f"{module.name}:{node.lineno}", text
    for case, (workers, _) in CASES.items():  # test_validation's fragments, as one() joins them
        text = "name: t\nspouts:\n- {name: src, entry: vmod:source}\nworkers:\n" + textwrap.dedent(
            workers
        )
        yield f"test_validation.py CASES[{case!r}]", text


INLINE = list(_inline_topologies())


def test_the_harvest_finds_valid_and_bad_inline_topologies() -> None:
    assert len(INLINE) > 45
    rejected = 0
    for _, text in INLINE:
        try:
            Topology.model_validate(yaml.safe_load(text))
        except ValidationError:
            rejected += 1
    assert 5 < rejected < len(INLINE) - 20


@pytest.mark.parametrize("where, text", INLINE, ids=[w for w, _ in INLINE])
def test_schema_agrees_with_validate_on_inline_topologies(
    where: str, text: str, tmp_path: Path
) -> None:
    data = yaml.safe_load(text)
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    try:
        load(path, import_entries=False, environ=AnyVariable())
    except TopologyError:
        pass
    else:  # validate accepts it: an editor must not underline anything
        assert schema_errors(data) == [], where
    if "${" in text:
        return  # pydantic would see the unexpanded text
    try:
        Topology.model_validate(data)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        if kinds & EXPRESSIBLE:
            assert schema_errors(data), f"{where}: the schema misses {kinds}"


GOOD = {
    "name": "t",
    "spouts": [{"name": "src", "entry": "m:source"}],
    "workers": [{"name": "w", "entry": "m:fn", "inputs": ["src"]}],
}


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DELETE = object()
BAD = {
    "unknown key at the top": (("inptus",), ["src"]),
    "unknown key in a worker": (("workers", 0, "inptus"), ["src"]),
    "unknown key in settings": (("settings", "serialiser"), "json"),
    "unknown key in a host": (("hosts", "edge", "adress"), "e"),
    "wrong type: parallelism": (("workers", 0, "parallelism"), "many"),
    "wrong type: bundle": (("workers", 0, "bundle"), [True]),
    "wrong type: spouts": (("spouts",), {"name": "src"}),
    "wrong type: port": (("hosts", "edge", "port"), "ssh"),
    "wrong type: gap_timeout": (("workers", 0, "gap_timeout"), "soon"),
    "bad enum: grouping": (("workers", 0, "grouping"), "random"),
    "bad enum: serializer": (("settings", "serializer"), "yaml"),
    "bad enum: security": (("settings", "security"), "tls"),
    "bad enum: on_error": (("workers", 0, "on_error"), "ignore"),
    "missing key: name": (("name",), _DELETE),
    "missing key: spouts": (("spouts",), _DELETE),
    "missing key: entry": (("spouts", 0, "entry"), _DELETE),
    "missing key: inputs": (("workers", 0, "inputs"), _DELETE),
    "bad name": (("workers", 0, "name"), "Bad Name"),
    "bad entry": (("workers", 0, "entry"), "m.fn"),
    "parallelism below 1": (("workers", 0, "parallelism"), 0),
    "port out of range": (("hosts", "edge", "port"), 70000),
    "no spout": (("spouts",), []),
    "a spout with inputs": (("spouts", 0, "inputs"), ["w"]),
    "bad host name": (("hosts", "bad host"), {}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_class_of_bad_file_is_rejected_by_both(case: str, tmp_path: Path) -> None:
    path, value = BAD[case]
    data = _with(path, value)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError):
        load(file, import_entries=False)
    assert schema_errors(data), case


def test_a_good_file_and_variables_pass() -> None:
    assert schema_errors(GOOD) == []
    varied = _with(("workers", 0, "parallelism"), "${WORKERS:-2}")
    varied["settings"] = {"serializer": "${SERIALIZER}"}
    assert schema_errors(varied) == []
    assert schema_errors(_with(("workers", 0, "parallelism"), "$WORKERS"))

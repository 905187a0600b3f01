"""The JSON Schema of a topology file, generated from the pydantic models so it cannot drift.

Editors read it through yaml-language-server (VS Code, JetBrains, Neovim), which speaks
JSON Schema draft-07 fully and later drafts only in part; so the schema is draft-07:
``definitions`` rather than ``$defs``, and a ``$ref`` next to a description goes inside
``allOf`` (draft-07 ignores the siblings of ``$ref``). Defaults built by a
``default_factory`` are shown too. A value written as a ``${VAR}`` reference is accepted
for every key, since ``validate`` checks it only once the variable is expanded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .topology import Topology

__all__ = ["DRAFT", "topology_schema"]

DRAFT = "http://json-schema.org/draft-07/schema#"
# A string holding a ${VAR} reference: what any key may hold before expansion.
VARIABLE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
_META = ("title", "description", "default")


class _Generator(GenerateJsonSchema):
    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """Show ``default_factory`` defaults (pydantic leaves them out) as plain data."""
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            schema = schema.copy()
            schema["default"] = cast(Callable[[], Any], factory)()
            del schema["default_factory"]
        return super().default_schema(schema)


def topology_schema() -> dict[str, Any]:
    """The schema document ``clusterduck schema`` prints."""
    raw = Topology.model_json_schema(
        ref_template="#/definitions/{model}", schema_generator=_Generator
    )
    definitions = raw.pop("$defs", {})
    body = _draft7({**raw, "definitions": definitions})
    for model in [body, *body["definitions"].values()]:
        model["properties"] = {
            name: _allow_variable(prop) for name, prop in model["properties"].items()
        }
    return {
        "$schema": DRAFT,
        "title": "clusterduck topology",
        **{k: v for k, v in body.items() if k != "title"},
    }


def _draft7(node: Any) -> Any:
    """Move each ``$ref`` that has siblings into ``allOf``, recursively."""
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _draft7(value) for key, value in node.items()}
    if "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _allow_variable(prop: dict[str, Any]) -> dict[str, Any]:
    """``prop`` also accepting a ``${VAR}`` string, unless it already takes any string."""
    meta = {k: v for k, v in prop.items() if k in _META}
    core = {k: v for k, v in prop.items() if k not in _META}
    branches = core["anyOf"] if set(core) == {"anyOf"} else [core]
    if any(
        b == {"type": "string"} or b.get("type") in ("object", "array") or "allOf" in b
        for b in branches
    ):
        return prop
    return {**meta, "anyOf": [*branches, VARIABLE]}

"""docs/reference.md is the user's contract: every key of the topology models is in it,
and the README points at it (not at a folder the user does not have)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from clusterduck.topology import (
    Component,
    Host,
    Settings,
    SlurmRequest,
    Spout,
    Topology,
    Worker,
)

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference.md"


@pytest.mark.parametrize(
    "model", [Topology, Component, Spout, Worker, Host, Settings, SlurmRequest]
)
def test_every_key_of_the_topology_models_is_documented(model: type[BaseModel]) -> None:
    text = REFERENCE.read_text()
    missing = [key for key in model.model_fields if f"`{key}`" not in text]
    assert not missing, f"{model.__name__} keys not in docs/reference.md: {missing}"


def test_every_literal_value_is_documented() -> None:
    text = REFERENCE.read_text()
    for value in ("pickle", "msgpack", "json", "auto", "curve", "none", "skip", "stop"):
        assert f"`{value}`" in text, value
    for value in ("shuffle", "key", "all"):
        assert f"`{value}`" in text, value


def test_readme_links_the_reference_and_not_the_shared_spec() -> None:
    readme = (REPO / "README.md").read_text()
    assert "docs/reference.md" in readme
    assert not re.search(r"\.\./shared/SPEC\.md", readme)

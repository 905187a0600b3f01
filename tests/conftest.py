"""Fixtures shared by the topology-file tests: write a YAML file (and modules) to tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["tests.conftest_ssh"]  # the multi-host fixtures (network namespaces)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "topologies"

WriteTopology = Callable[..., Path]


@pytest.fixture
def write_topology(tmp_path: Path) -> WriteTopology:
    """Write dedented YAML as tmp_path/topology.yaml, plus ``modules`` {name: source}."""

    def write(
        yaml_text: str, modules: dict[str, str] | None = None, name: str = "topology.yaml"
    ) -> Path:
        for module, source in (modules or {}).items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        path = tmp_path / name
        path.write_text(textwrap.dedent(yaml_text).lstrip("\n"))
        return path

    return write

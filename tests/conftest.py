"""Fixtures shared by the topology-file tests: write a YAML file (and modules) to tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lifecycle_fixtures import Clusterduck

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


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[Clusterduck]:
    """The real CLI with a private CLUSTERDUCK_HOME; whatever a test started is cleaned
    up afterwards, whether it passed or not."""
    cli = Clusterduck(tmp_path)
    try:
        yield cli
    finally:
        cli.cleanup()

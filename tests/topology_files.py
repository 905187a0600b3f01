"""Topology files that tests write on the fly (``tests/lifecycle_fixtures``'s CLI runs
them): a unique name per test, flow-style entries, no YAML text repeated per test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lifecycle_fixtures import Clusterduck

__all__ = ["write_topology"]


def write_topology(
    duck: Clusterduck,
    label: str,
    code: Path,
    spouts: Sequence[str],
    workers: Sequence[str],
) -> tuple[str, Path]:
    """Write ``<label>.yaml`` in the test's folder; its (unique) name and path.

    ``spouts`` and ``workers`` hold one flow-style mapping each, e.g.
    ``"{name: sink, entry: 'parts:keep', inputs: [source]}"``."""
    name = duck.name(label)
    path = duck.tmp / f"{label}.yaml"
    path.write_text(
        f"name: {name}\ncode: {code}\nspouts:\n"
        + "".join(f"  - {spout}\n" for spout in spouts)
        + "workers:\n"
        + "".join(f"  - {worker}\n" for worker in workers)
    )
    return name, path

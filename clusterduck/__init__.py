"""clusterduck: Storm-like streaming topologies in Python, driven by YAML.

The public face: load and validate a topology file, ask a running component who it is,
run a topology in your own tests (``clusterduck.testing``), and the error tree.

The topology models are loaded on first use (module ``__getattr__``): the processes that
run on hosts import ``clusterduck.runtime`` through this package, and must not pay for
pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .exceptions import (  # noqa: E402
    ClusterduckError,
    LaunchError,
    Problem,
    RuntimeFault,
    StateError,
    TopologyError,
)
from .runtime.context import InstanceContext, context  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path

    from .loader import TopologyFile
    from .topology import Host, Settings, Spout, Topology, Worker

__all__ = [
    "ClusterduckError",
    "Host",
    "InstanceContext",
    "LaunchError",
    "Problem",
    "RuntimeFault",
    "Settings",
    "Spout",
    "StateError",
    "Topology",
    "TopologyError",
    "Worker",
    "__version__",
    "context",
    "load",
]

_MODELS = ("Host", "Settings", "Spout", "Topology", "Worker")


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        from . import topology

        return getattr(topology, name)
    raise AttributeError(f"module 'clusterduck' has no attribute {name!r}")


def load(path: str | Path, *, import_entries: bool = True) -> TopologyFile:
    """Load and validate a topology file (see ``clusterduck.loader.load``)."""
    from .loader import load as _load

    return _load(path, import_entries=import_entries)

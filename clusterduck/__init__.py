"""clusterduck: Storm-like streaming topologies in Python, driven by YAML.

The public face: load and validate a topology file, ask a running component who it is,
run a topology in your own tests (``clusterduck.testing``), and the error tree.
"""

from __future__ import annotations

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
from .topology import Host, Settings, Spout, Topology, Worker  # noqa: E402

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


def load(path, *, import_entries: bool = True):  # type: ignore[no-untyped-def]
    """Load and validate a topology file (see ``clusterduck.loader.load``)."""
    from .loader import load as _load

    return _load(path, import_entries=import_entries)

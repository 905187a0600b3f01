"""Who am I? What user code can ask from inside a spout or worker."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InstanceContext", "context", "set_context"]


@dataclass(frozen=True)
class InstanceContext:
    topology: str
    component: str
    index: int
    parallelism: int
    host: str


_current: InstanceContext | None = None


def set_context(ctx: InstanceContext | None) -> None:
    global _current
    _current = ctx


def context() -> InstanceContext:
    """The running instance (e.g. to shard a spout or name a per-instance output file)."""
    if _current is None:
        raise RuntimeError("clusterduck.context() is only available inside a running component")
    return _current

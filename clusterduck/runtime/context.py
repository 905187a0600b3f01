"""Who am I? What user code can ask from inside a spout or worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["InstanceContext", "context", "set_context", "set_seq"]

# The seq id of the message being processed: a one-slot list the runtime writes before
# each call (cheaper than a new context object per message).
_seq: list[int | None] = [None]
# While a worker calls its function over a slice with map() (runtime/component.py): the
# slice's ids and the results so far, so the id being called is ``ids[len(results)]``.
_running: list[tuple[Sequence[int], list[Any]] | None] = [None]


@dataclass(frozen=True)
class InstanceContext:
    topology: str
    component: str
    index: int
    parallelism: int
    host: str
    #: A spout restarted after a crash under at-least-once: every id below this one is
    #: done (None on a first start, or when nothing was saved). A spout whose ids grow
    #: resumes its source from here (README "Guarantees").
    resume_from: int | None = None

    @property
    def seq_id(self) -> int | None:
        """The seq id of the message the worker is being called with (None in a spout):
        the key of an idempotent write."""
        running = _running[0]
        if running is not None:
            ids, results = running
            return ids[len(results)]
        return _seq[0]


_current: InstanceContext | None = None


def set_context(ctx: InstanceContext | None) -> None:
    global _current
    _current = ctx


def set_seq(seq: int | None) -> None:
    _seq[0] = seq


def context() -> InstanceContext:
    """The running instance (e.g. to shard a spout or name a per-instance output file)."""
    if _current is None:
        raise RuntimeError("clusterduck.context() is only available inside a running component")
    return _current

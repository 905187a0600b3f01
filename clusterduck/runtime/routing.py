"""Which instance of a downstream component gets each message (SPEC §1).

Between components output is broadcast; inside a component of parallelism k a message
goes to one instance: any ready one for ``shuffle`` (chosen by the sender by what can
take it now), ``seq % k`` for bundled workers, a stable hash of ``key(value)`` for
``grouping: key``, and every instance for ``grouping: all``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Route", "stable_hash"]

Batch = list[tuple[int, Any]]


def stable_hash(key: Any) -> int:
    """A hash that every process on every host agrees on (Python's ``hash`` is salted)."""
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    elif isinstance(key, bool) or key is None:
        data = repr(key).encode()
    elif isinstance(key, int):
        data = str(key).encode()
    else:
        data = repr(key).encode("utf-8", "surrogatepass")
    return zlib.crc32(data)


@dataclass
class Route:
    """How one sender splits its output for one downstream component."""

    component: str
    parallelism: int
    mode: str  # "shuffle" | "seq" | "key" | "all"
    key: Callable[[Any], Any] | None = None

    def split(self, batch: Batch) -> dict[int, Batch] | None:
        """Sub-batches per instance index; None means "any one instance" (shuffle)."""
        k = self.parallelism
        if self.mode == "shuffle":
            return None if k > 1 else {0: batch}
        if self.mode == "all" or k == 1:
            return {i: batch for i in range(k)}
        parts: dict[int, Batch] = {}
        if self.mode == "seq":
            for item in batch:
                parts.setdefault(item[0] % k, []).append(item)
        else:
            key = self.key
            assert key is not None
            for item in batch:
                parts.setdefault(stable_hash(key(item[1])) % k, []).append(item)
        return parts

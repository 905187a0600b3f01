"""Which instance of a downstream component gets each message (docs/reference.md §1).

Between components output is broadcast; inside a component of parallelism k a message
goes to one instance: any ready one for ``shuffle`` (chosen by the sender by what can
take it now), ``seq % k`` for bundled workers, a stable hash of ``key(value)`` for
``grouping: key``, and every instance for ``grouping: all``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..entries import resolve_entry
from ..protocol import Batch, ComponentSpec

__all__ = ["Route", "stable_hash"]

OnError = Callable[[int, Exception], None]


def _callable(target: object) -> Callable[[Any], Any]:
    """A resolved entry as a callable (validation already checked that it is one)."""
    if not callable(target):
        raise TypeError(f"{target!r} is not callable")
    return target


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
    # Shuffle: where the next turn starts (the instance after the last one that took).
    _next: int = field(default=0, compare=False, repr=False)

    @classmethod
    def for_worker(cls, worker: ComponentSpec, code_dir: Path) -> Route:
        """How messages reach ``worker``'s instances (docs/reference.md §1)."""
        if worker.bundle:
            return cls(worker.name, worker.parallelism, "seq")
        key = None
        if worker.grouping == "key" and worker.key:
            key = _callable(resolve_entry(worker.key, code_dir))
        return cls(worker.name, worker.parallelism, worker.grouping, key)

    @property
    def shuffles(self) -> bool:
        """A batch goes whole to any one instance (``split`` gives None)."""
        return self.mode == "shuffle" and self.parallelism > 1

    @property
    def splits(self) -> bool:
        """A batch is cut by message (``seq``, ``key``): ``split`` must see the values."""
        return self.mode in ("seq", "key") and self.parallelism > 1

    def shuffle_order(self) -> list[int]:
        """Shuffle: the instances to offer the next batch to, in turn; the first one with
        room takes it (least-loaded) and is reported with :meth:`took`."""
        k = self.parallelism
        start = self._next
        return [(start + step) % k for step in range(k)]

    def took(self, index: int) -> None:
        """Instance ``index`` took a shuffled batch: the next turn starts after it."""
        self._next = (index + 1) % self.parallelism

    def split(self, batch: Batch, on_error: OnError | None = None) -> dict[int, Batch] | None:
        """Sub-batches per instance index; None means "any one instance" (shuffle).

        A ``key`` function that raises drops that message and reports it to ``on_error``,
        like an error in a worker function."""
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
                try:
                    index = stable_hash(key(item[1])) % k
                except Exception as exc:  # noqa: BLE001 - user code may raise anything
                    if on_error is None:
                        raise
                    on_error(item[0], exc)
                    continue
                parts.setdefault(index, []).append(item)
        return parts

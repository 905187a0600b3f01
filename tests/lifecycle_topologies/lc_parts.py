"""Spouts and workers for the lifecycle tests (tests/test_lifecycle.py).

Every YAML in this folder imports from here. Names, paths and pacing come in through
``${VAR}`` in the YAML, set by the test in the environment of ``clusterduck up``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Dispatch = Callable[[int, Any], None]


# -- spouts ------------------------------------------------------------------------------


def endless(dispatch: Dispatch, delay: str = "0.001") -> None:
    """Ids 0, 1, 2 … forever, each with its own id as value, ``delay`` seconds apart
    (0: as fast as back-pressure allows). Ends only on a graceful ``down``."""
    pause = float(delay)
    i = 0
    while True:
        dispatch(i, i)
        i += 1
        if pause:
            time.sleep(pause)


def flood(dispatch: Dispatch, size: int = 4096) -> None:
    """``size``-byte payloads forever, as fast as ``dispatch`` lets it. Each payload is a
    distinct object, so that pickle cannot send one copy for a whole batch."""
    filler = b"x" * (size - 8)
    i = 0
    while True:
        dispatch(i, i.to_bytes(8, "little") + filler)
        i += 1


def count_up_after(dispatch: Dispatch, go: str, count: int = 4) -> None:
    """``count_up`` once the file ``go`` exists (a test says when the stream may begin)."""
    while not Path(go).exists():
        time.sleep(0.01)
    count_up(dispatch, int(count))


def count_up_then_wait(dispatch: Dispatch, end: str, count: int = 100) -> None:
    """Ids 0..count-1, then wait until the file ``end`` exists before the stream ends
    (a test kills a worker meanwhile, knowing everything went through it)."""
    count_up(dispatch, int(count))
    while not Path(end).exists():
        time.sleep(0.01)


def count_up(dispatch: Dispatch, count: int = 20) -> None:
    """Ids 0..count-1, each with its own id as value; then the stream ends."""
    for i in range(count):
        dispatch(i, i)


# -- workers -----------------------------------------------------------------------------


def relay(value: int) -> int:
    """Forward the value; say so on stdout now and then (what ``logs`` shows)."""
    if value % 100 == 0:
        print(f"relay saw {value}")
    return value


def double(value: int) -> int:
    return value * 2


def fail_at(value: int, bad: int = 5) -> int:
    """Raise on one value: with ``on_error: stop`` that ends the topology."""
    if value == bad:
        raise ValueError(f"fail_at: refusing {value}")
    return value


class BrokenAtInit:
    """Imports fine (so validation passes) but cannot be instantiated in its process."""

    def __init__(self, reason: str = "no database here") -> None:
        raise RuntimeError(f"BrokenAtInit: {reason}")

    def __call__(self, value: Any) -> Any:
        return value


# -- sinks -------------------------------------------------------------------------------


class CountingSink:
    """Counts what it receives; ``close()`` writes the count to ``out`` (if set)."""

    def __init__(self, out: str = "") -> None:
        self.out = out
        self.count = 0

    def __call__(self, value: Any) -> None:
        self.count += 1

    def close(self) -> None:
        if self.out:
            tmp = Path(self.out + ".tmp")
            tmp.write_text(str(self.count))
            tmp.replace(self.out)


class Printer:
    """Prints every value and, at the end, a total: what ``up --wait`` shows."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def __call__(self, value: int) -> None:
        self.count += 1
        self.total += value
        print(f"printer got {value}")

    def close(self) -> None:
        print(f"printer done: count={self.count} total={self.total}")


class SlowSink:
    """Takes ``pause`` seconds every ``every`` messages: slower than any spout here."""

    def __init__(self, pause: float = 0.001, every: int = 20) -> None:
        self.pause = pause
        self.every = every
        self.count = 0

    def __call__(self, value: Any) -> None:
        self.count += 1
        if self.count % self.every == 0:
            time.sleep(self.pause)


# -- flow control: the drain test -----------------------------------------------------


def counted(dispatch: Dispatch, out: str) -> None:
    """Ids 0, 1, 2 … as fast as dispatch takes them, until a graceful ``down``; then
    writes to ``out`` how many ``dispatch`` calls returned."""
    i = 0
    try:
        while True:
            dispatch(i, i)
            i += 1
    finally:
        tmp = Path(out + ".tmp")
        tmp.write_text(str(i))
        tmp.replace(out)


def sleepy(value: Any, ms: int = 5) -> Any:
    time.sleep(ms / 1000)
    return value


class IdSink:
    """Keeps every id it receives; ``close()`` writes them, one per line, to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.ids: list[int] = []

    def __call__(self, value: int) -> None:
        self.ids.append(value)

    def close(self) -> None:
        tmp = Path(self.out + ".tmp")
        tmp.write_text("\n".join(map(str, self.ids)))
        tmp.replace(self.out)


# -- for the dashboard's topology (tests/test_dashboard.py) ---------------------------------


def flaky(value: int, every: int = 500) -> int:
    """Raise on every ``every``-th value: errors (with their seq ids) to show."""
    if value % every == every - 1:
        raise ValueError(f"flaky: refusing {value}")
    return value


def join(relayed: int, checked: int) -> int:
    """The bundled join of the two branches (both carry the id as their value)."""
    return relayed + checked


def padded(value: int, size: int = 2048) -> bytes:
    """The value in ``size`` bytes: results large enough to fill a socket's buffers."""
    return value.to_bytes(8, "little") + b"p" * (int(size) - 8)


class SlowToStart:
    """Takes ``seconds`` to set up in its process (a model to load): ``up`` waits."""

    def __init__(self, seconds: float = 30.0) -> None:
        time.sleep(float(seconds))

    def __call__(self, value: Any) -> Any:
        return value

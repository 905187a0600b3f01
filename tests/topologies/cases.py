"""Spouts and workers for the runtime integration tests (tests/test_runtime_*.py).

Every topology YAML in this folder imports from here. Paths that a test must read back
(data files, files written by ``close()``, markers) come in through ``${VAR}`` in the
YAML, set by the test to a place under its ``tmp_path``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import clusterduck

Dispatch = Callable[[int, Any], None]


# -- spouts ------------------------------------------------------------------------------


def count_up(dispatch: Dispatch, count: int | str = 100) -> None:
    """Ids 0..count-1, each with its own id as value (``count`` may come from ``${VAR}``)."""
    for i in range(int(count)):
        dispatch(i, i)


def permutation(dispatch: Dispatch, count: int = 1000, seed: int = 0, tag: str = "v") -> None:
    """Ids 0..count-1 in a seeded random order, each with the value ``tag-id``."""
    ids = list(range(count))
    random.Random(seed).shuffle(ids)
    for i in ids:
        dispatch(i, f"{tag}-{i}")


def read_lines(dispatch: Dispatch, path: str) -> None:
    """Every line of a text file, numbered from 0."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            dispatch(number, line.rstrip("\n"))


def keyed(dispatch: Dispatch, count: int = 3000, keys: int = 40) -> None:
    """(key, i) pairs, keys cycling through ``k0``..``k{keys-1}``."""
    for i in range(count):
        dispatch(i, (f"k{i % keys}", i))


def keyed_slowly(dispatch: Dispatch, count: int = 40, keys: int = 40) -> None:
    """``keyed``, a message every millisecond: each one comes alone, so the spout's own
    thread sends it (runtime/spout.py)."""
    for i in range(count):
        time.sleep(0.001)
        dispatch(i, (f"k{i % keys}", i))


def records(dispatch: Dispatch, count: int = 50) -> None:
    """Nested values every serializer can carry: dicts, lists, strings, floats, None."""
    for i in range(count):
        dispatch(
            i, {"id": i, "name": f"r{i}", "tags": ["a", "b"][: i % 3], "w": i / 4, "none": None}
        )


async def async_count(dispatch: Callable[[int, Any], Awaitable[None]], count: int = 500) -> None:
    """An ``async def`` spout: ``dispatch`` is awaited."""
    for i in range(count):
        await dispatch(i, i * 3)


def with_gap(
    dispatch: Dispatch, marker: str, missing: int = 10, count: int = 20, wait: float = 20.0
) -> None:
    """Ids 0..count-1 without ``missing``; after ``missing + 1`` it waits (up to ``wait``
    seconds) for the sequential worker to write ``marker`` — which it can only do once
    ``gap_timeout`` skipped the gap, since this stream is still open — then sends the
    rest, each carrying whether the marker was seen."""
    for i in range(missing):
        dispatch(i, i)
    dispatch(missing + 1, missing + 1)
    seen = False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if Path(marker).exists():
            seen = True
            break
        time.sleep(0.02)
    for i in range(missing + 2, count):
        dispatch(i, (i, "after-marker" if seen else "no-marker"))


# -- workers -----------------------------------------------------------------------------


def identity(value: Any) -> Any:
    return value


def double(value: int) -> int:
    return 2 * value


def plus_one(value: int) -> int:
    return value + 1


def join(left: Any, right: Any) -> tuple[Any, Any]:
    return left, right


def split_words(line: str) -> Iterator[str]:
    yield from line.split()


def word_of(word: str) -> str:
    return word


class RunningCount:
    """Running count per word: (word, count so far) for every occurrence."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, word: str) -> tuple[str, int]:
        self.counts[word] = self.counts.get(word, 0) + 1
        return word, self.counts[word]


def with_index(value: Any) -> tuple[Any, int]:
    """The value and the index of the instance that handled it."""
    return value, clusterduck.context().index


def first_of(value: tuple[Any, ...]) -> Any:
    return value[0]


def fail_every_tenth(value: int) -> int:
    if value % 10 == 0:
        raise ValueError(f"refusing {value}")
    return value


def fail_at_five(value: int) -> int:
    if value == 5:
        raise ValueError("five is fatal")
    return value


def twice(value: int) -> Iterator[int]:
    """A generator: two outputs, both with the input's id."""
    yield value
    yield value * 10


def evens_only(value: int) -> int | None:
    return value if value % 2 == 0 else None


class Scaler:
    """A class entry with args; ``close()`` writes how many messages it saw."""

    def __init__(self, factor: int, out: str) -> None:
        self.factor = factor
        self.out = Path(out)
        self.seen = 0
        self.closed = 0

    def __call__(self, value: int) -> int:
        self.seen += 1
        return value * self.factor

    def close(self) -> None:
        self.closed += 1
        self.out.write_text(f"seen={self.seen} closed={self.closed}\n", encoding="utf-8")


def annotate(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "seen": True, "pair": (record["id"], record["name"])}


class MarkAt:
    """Sequential worker: writes ``marker`` when it handles id ``at``."""

    def __init__(self, marker: str, at: int = 11) -> None:
        self.marker = Path(marker)
        self.at = at

    def __call__(self, value: Any) -> Any:
        if value == self.at:
            self.marker.write_text("ran\n", encoding="utf-8")
        return value


def key_refuses_seven(value: tuple[str, int]) -> str:
    """A ``key`` function that raises for one key: those messages are dropped, counted."""
    if value[0] == "k7":
        raise KeyError("k7 has no home")
    return value[0]


def unencodable_every_tenth(value: int) -> Any:
    """Every 10th result is a set, which msgpack cannot carry."""
    return {value} if value % 10 == 0 else value


def crash_process(value: int) -> int:
    """Dies the hard way on every message: restarts cannot help."""
    os._exit(17)


def slow_count(dispatch: Dispatch, count: int = 100, delay: float = 0.25) -> None:
    """Ids 0..count-1, paced: the stream outlives a worker's restarts."""
    for i in range(count):
        dispatch(i, i)
        time.sleep(delay)


class CrashOnce:
    """Kills its process on the first message it ever sees (remembered in ``marker``)."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def __call__(self, value: int) -> int:
        if not self.marker.exists():
            self.marker.write_text("crashed\n", encoding="utf-8")
            os._exit(17)
        return value


def padded(dispatch: Dispatch, count: int | str = 100, pad: int = 200) -> None:
    """(i, padding) for ids 0..count-1: enough bytes to fill every socket buffer."""
    padding = "x" * pad
    for i in range(int(count)):
        dispatch(i, (i, padding + str(i)))  # a distinct object each, as real data is


def even_ids(value: tuple[int, str]) -> tuple[int, str] | None:
    return value if value[0] % 2 == 0 else None


def join_ids(direct: tuple[int, str], filtered: tuple[int, str]) -> int:
    assert direct == filtered
    return direct[0]


# -- flow control (tests/test_flow_control.py) --------------------------------------------


def sleep_ms(value: Any, ms: int = 10) -> Any:
    """Work that takes ``ms`` milliseconds of waiting, like an I/O call."""
    time.sleep(ms / 1000)
    return value


class ProgressWorker:
    """Sleeps ``ms`` per message and keeps its running count in the file ``progress``."""

    def __init__(self, progress: str, ms: int = 5) -> None:
        self.progress = Path(progress)
        self.ms = ms
        self.done = 0

    def __call__(self, value: Any) -> Any:
        time.sleep(self.ms / 1000)
        self.done += 1
        tmp = self.progress.with_suffix(".tmp")
        tmp.write_text(str(self.done))
        tmp.replace(self.progress)
        return value


class FirstArrival:
    """A sink that, on its first call, returns how far the worker was (its ``progress``
    file); later calls return None."""

    def __init__(self, progress: str) -> None:
        self.progress = Path(progress)
        self.first = True

    def __call__(self, value: Any) -> int | None:
        if not self.first:
            return None
        self.first = False
        return int(self.progress.read_text())


def counting_spout(dispatch: Dispatch, count: int, dispatched: str) -> None:
    """Ids 0..count-1; after each dispatch returns, the file ``dispatched`` holds how many
    did."""
    path, tmp = Path(dispatched), Path(dispatched + ".tmp")
    for i in range(count):
        dispatch(i, i)
        tmp.write_text(str(i + 1))
        tmp.replace(path)


class AheadOfMe:
    """Sleeps ``ms``; returns how many messages the spout had dispatched that this worker
    had not processed yet when the call began (read from the spout's file)."""

    def __init__(self, dispatched: str, ms: int = 5) -> None:
        self.dispatched = Path(dispatched)
        self.ms = ms
        self.done = 0

    def __call__(self, value: Any) -> int:
        ahead = int(self.dispatched.read_text()) - self.done
        time.sleep(self.ms / 1000)
        self.done += 1
        return ahead

"""Functions of the flow-control benchmarks (latency.py, slowwork.py, drain.py).

Times are ``time.monotonic()`` (one clock for every process of this machine), written as
files into ``stamps``.
"""

from __future__ import annotations

import array
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Dispatch = Callable[[int, Any], None]


def paced(dispatch: Dispatch, rate: str, count: str, stamps: str) -> None:
    """``count`` messages at ``rate`` per second; each carries its dispatch time."""
    n, interval = int(count), 1.0 / float(rate)
    Path(stamps, "start").write_text(repr(time.monotonic()))
    began, cpu = time.monotonic(), cpu_seconds()
    for i in range(n):
        due = began + i * interval
        while (now := time.monotonic()) < due:
            if due - now > 0.0002:
                time.sleep(due - now - 0.0001)
        dispatch(i, time.monotonic())
    Path(stamps, "spout.cpu").write_text(repr(cpu_seconds() - cpu))


def cpu_seconds() -> float:
    """CPU seconds this process used so far, every thread (libzmq's I/O threads too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def numbers(dispatch: Dispatch, count: str, stamps: str) -> None:
    """``count`` small messages as fast as dispatch takes them."""
    Path(stamps, "start").write_text(repr(time.monotonic()))
    for i in range(int(count)):
        dispatch(i, i)


def counted(dispatch: Dispatch, stamps: str) -> None:
    """Ids 0, 1, 2 … forever (until a graceful down); ``dispatched`` holds how many
    dispatch calls returned."""
    out = Path(stamps, "dispatched")
    i = 0
    try:
        while True:
            dispatch(i, i)
            i += 1
    finally:
        out.write_text(str(i))
        Path(stamps, "stopped").write_text(repr(time.monotonic()))


def identity(value: Any) -> Any:
    return value


class _Latencies:
    """The latency of every message so far (from its dispatch), and this process's CPU
    from its first message; both written on close (float64 array, seconds)."""

    def __init__(self, stamps: str, name: str, cpu_file: str) -> None:
        self.stamps, self.name, self.cpu_file = Path(stamps), name, cpu_file
        self.lat = array.array("d")
        self.cpu: float | None = None  # at the first message

    def _stamp(self, value: float) -> None:
        self.lat.append(time.monotonic() - value)
        if self.cpu is None:
            self.cpu = cpu_seconds()

    def close(self) -> None:
        with open(self.stamps / self.name, "wb") as f:
            self.lat.tofile(f)
        used = cpu_seconds() - (self.cpu or 0.0)
        (self.stamps / self.cpu_file).write_text(repr(used))


class HopStamper(_Latencies):
    """An identity worker that keeps the latency of every message so far (the hops up to
    here, for ``latency.py --detail``)."""

    def __init__(self, stamps: str, hop: str) -> None:
        super().__init__(stamps, hop, f"{hop}.cpu")

    def __call__(self, value: float) -> float:
        self._stamp(value)
        return value


def sleepy(value: Any, seconds: str = "0.01") -> Any:
    time.sleep(float(seconds))
    return value


class LatencySink(_Latencies):
    """Keeps dispatch→call latency of every message."""

    def __init__(self, stamps: str) -> None:
        super().__init__(stamps, "latency", "sink.cpu")

    def __call__(self, value: float) -> None:
        self._stamp(value)


class EndSink:
    """Stamps the time the last of ``count`` messages arrived."""

    def __init__(self, count: str, stamps: str) -> None:
        self.expected, self.stamps, self.seen = int(count), Path(stamps), 0

    def __call__(self, value: Any) -> None:
        self.seen += 1
        if self.seen == self.expected:
            (self.stamps / "end").write_text(repr(time.monotonic()))


class IdSink:
    """Records every id it receives; writes them (int64) on close."""

    def __init__(self, stamps: str) -> None:
        self.stamps = Path(stamps)
        self.ids = array.array("q")

    def __call__(self, value: int) -> None:
        self.ids.append(value)

    def close(self) -> None:
        with open(self.stamps / "ids", "wb") as f:
            self.ids.tofile(f)
        (self.stamps / "closed").write_text(repr(time.monotonic()))

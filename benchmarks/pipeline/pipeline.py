"""Functions of the benchmark topology (see ../pipeline.yaml and ../throughput.py).

Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of this
machine), written as text files into ``stamps``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def numbers(dispatch: Callable[[int, Any], None], count: str, stamps: str) -> None:
    """Dispatch ``count`` small messages ``(i, "x")`` as fast as dispatch takes them."""
    n = int(count)
    Path(stamps, "start").write_text(repr(time.monotonic()))
    for i in range(n):
        dispatch(i, (i, "x"))


def identity(value: Any) -> Any:
    return value


class Sink:
    """Counts messages; stamps the time the last expected one arrived."""

    def __init__(self, count: str, stamps: str) -> None:
        self.expected = int(count)
        self.stamps = Path(stamps)
        self.seen = 0

    def __call__(self, value: Any) -> None:
        self.seen += 1
        if self.seen == self.expected:
            (self.stamps / "end").write_text(repr(time.monotonic()))

    def close(self) -> None:
        (self.stamps / "count").write_text(str(self.seen))

"""Spouts and workers for the Slurm tests (tests/test_slurm.py)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Dispatch = Callable[[int, Any], None]


def count_up(dispatch: Dispatch, count: int = 100) -> None:
    """Ids 0..count-1, each with its own id as value; then the stream ends."""
    for i in range(count):
        dispatch(i, i)


def endless(dispatch: Dispatch, delay: str = "0.01") -> None:
    """Ids forever, ``delay`` seconds apart; ends only on a graceful ``down``."""
    i = 0
    while True:
        dispatch(i, i)
        i += 1
        time.sleep(float(delay))


def square(value: int) -> tuple[int, int, str]:
    """The square, with where it was computed: the Slurm job and node it ran in."""
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    return value, value * value, f"{os.environ.get('SLURM_JOB_ID', '-')}@{node}"


class Collect:
    """Writes every result, sorted, to ``out`` when the stream ends."""

    def __init__(self, out: str = "") -> None:
        self.out = out
        self.got: list[Any] = []

    def __call__(self, value: Any) -> None:
        self.got.append(value)

    def close(self) -> None:
        if self.out:
            tmp = Path(self.out + ".tmp")
            tmp.write_text("\n".join(" ".join(map(str, v)) for v in sorted(self.got)) + "\n")
            tmp.replace(self.out)

"""Functions of gated.yaml (tests/test_security.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

GATE_TIMEOUT = 120.0


def gated_numbers(dispatch: Callable[[int, Any], None], n: int, gate: str) -> None:
    """0..n-1, pausing halfway until the file ``gate`` exists (polled, with a deadline)."""
    for i in range(n // 2):
        dispatch(i, i)
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(n // 2, n):
        dispatch(i, i)


def relay(value: Any) -> Any:
    return value

"""A sequential component's cursor, saved in its run directory so a restart resumes.

Saving after every id would cost an fsync per message (a millisecond on many disks).
Instead the cursor is written when it moved and the last save is at least ``interval``
old, where the interval is measured: ``FSYNC_SHARE`` of the time goes to fsync at most
(an fsync of 1 ms → a save every 20 ms), never more often than ``MIN_INTERVAL``, never
less often than ``MAX_INTERVAL`` (a sequential worker's acks wait for the save, and the
spout's pending window must cover that wait). Ids
called after the last save are called again after a crash (README "Guarantees") —
unless the component defines ``committed()``, which then decides (runtime/process.py).

The file holds one line, the next id to call; it is replaced atomically (write a
temporary file, fsync it, rename), so a crash leaves the old or the new value.
Pure apart from the file; the clock is injected for tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["FSYNC_SHARE", "SavedCursor"]

FSYNC_SHARE = 0.05
MIN_INTERVAL = 0.01
MAX_INTERVAL = 0.2


class SavedCursor:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.saved: int | None = None  # the value on disk
        self.interval = MIN_INTERVAL
        self.saves = 0
        self._last = float("-inf")

    def load(self) -> int | None:
        """The saved next id, or None when nothing was saved (or the file is unreadable)."""
        try:
            self.saved = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        return self.saved

    def due(self, cursor: int) -> bool:
        return cursor != self.saved and self.clock() - self._last >= self.interval

    def next_due(self, cursor: int) -> float | None:
        """When a save of ``cursor`` will be due (None: nothing to save)."""
        return None if cursor == self.saved else self._last + self.interval

    def save(self, cursor: int) -> None:
        began = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{cursor}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        cost = time.perf_counter() - began
        self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, cost / FSYNC_SHARE))
        self.saved = cursor
        self.saves += 1
        self._last = self.clock()

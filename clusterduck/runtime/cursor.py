"""A sequential component's cursor, saved in its run directory so a restart resumes.

Saving after every id would cost an fsync per message (milliseconds on many disks: 4 ms
on the development machine). A sequential worker under at-least-once acknowledges only
ids below its *saved* cursor, so the save sits on the acknowledgement path: done in the
worker's own loop on a schedule, it either costs the worker its time (fsync blocks) or
holds acks long enough to fill the spout's pending window (that measured 0.66× of a
plain sink). So a background thread saves: the loop only says which cursor it wants
saved (:meth:`SavedCursor.request`, no I/O), the thread writes it, fsyncs and renames,
back to back but at most every ``MIN_INTERVAL``, and publishes :attr:`SavedCursor.saved`;
fsync releases the GIL, so the worker goes on meanwhile. Ids called after the last save
are called again after a crash (README "Guarantees") — unless the component defines
``committed()``, which then decides (runtime/guarantee.py).

The file holds one line, the next id to call; it is replaced atomically (write a
temporary file, fsync it, rename), so a crash leaves the old or the new value.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

__all__ = ["MIN_INTERVAL", "SavedCursor"]

log = logging.getLogger("clusterduck.runtime")

#: Saves start at most this often (a bound on the disk's load, not on the latency).
MIN_INTERVAL = 0.01


class SavedCursor:
    """One cursor file; :attr:`saved` is the value known to be on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: int | None = None  # the value on disk (written by the saver thread)
        self.saves = 0
        self._wanted: int | None = None
        self._lock = threading.Lock()  # one writer of the file at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> int | None:
        """The saved next id, or None when nothing was saved (or the file is unreadable)."""
        try:
            self.saved = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        return self.saved

    def request(self, cursor: int) -> None:
        """Have ``cursor`` saved soon (never blocks, no I/O here)."""
        if cursor == self.saved or cursor == self._wanted:
            return
        self._wanted = cursor
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"cursor-{self.path.name}", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def pending(self) -> bool:
        """A requested cursor is not on disk yet."""
        return self._wanted is not None and self._wanted != self.saved

    def save(self, cursor: int) -> None:
        """Save ``cursor`` now and wait for it (end of stream)."""
        if self._wanted is None or cursor > self._wanted:
            self._wanted = cursor
        self._write(cursor)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            wanted = self._wanted
            if wanted is None or wanted == self.saved:
                continue
            began = time.monotonic()
            try:
                self._write(wanted)
            except OSError as exc:  # a full disk: acks wait, the stream goes on
                log.error("could not save the cursor to %s: %s", self.path, exc)
            rest = MIN_INTERVAL - (time.monotonic() - began)
            if rest > 0:
                time.sleep(rest)  # pacing the disk, in the saver's own thread
            if self._wanted != self.saved:
                self._wake.set()

    def _write(self, cursor: int) -> None:
        with self._lock:
            if self.saved is not None and cursor <= self.saved:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{cursor}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self.saved = cursor
            self.saves += 1

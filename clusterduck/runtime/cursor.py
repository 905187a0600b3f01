"""A sequential component's cursor, saved in its run directory so a restart resumes.

Saving after every id would cost an fsync per message (milliseconds on many disks: 4 ms
on the development machine). A sequential worker under at-least-once acknowledges only
ids below its *saved* cursor, so the save sits on the acknowledgement path: done in the
worker's own loop on a schedule, it either costs the worker its time (fsync blocks) or
holds acks long enough to fill the spout's pending window. So a background thread saves:
the loop only says which cursor it wants saved (:meth:`SavedCursor.request`, no I/O), the
thread writes it and syncs, back to back but at most every ``MIN_INTERVAL``, and
publishes :attr:`SavedCursor.saved`; the sync releases the GIL, so the worker goes on.
Ids called after the last save are called again after a crash (README "Guarantees") —
unless the component defines ``committed()``, which then decides (runtime/guarantee.py).

The file is written in place, not replaced: two fixed 32-byte slots, each ``(cursor,
generation, crc32)``, written in turn with one ``pwrite`` and one ``fdatasync`` (a
rename per save cost as much as the fsync, and every system call hands the GIL back and
forth with the busy worker thread). A crash in the middle of a write can only tear the
slot being written, whose checksum then fails: :meth:`SavedCursor.load` takes the valid
slot of the highest generation, so it reads the old or the new value, never garbage.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

__all__ = ["MIN_INTERVAL", "SavedCursor"]

log = logging.getLogger("clusterduck.runtime")

#: Saves start at most this often (a bound on the disk's load, not on the latency).
MIN_INTERVAL = 0.01
_SLOT = struct.Struct("<qqI12x")  # cursor, generation, crc32 of the first 16 bytes


def _pack(cursor: int, generation: int) -> bytes:
    head = struct.pack("<qq", cursor, generation)
    return _SLOT.pack(cursor, generation, zlib.crc32(head))


def _unpack(data: bytes) -> tuple[int, int] | None:
    """``(generation, cursor)`` of a valid slot, or None."""
    if len(data) != _SLOT.size:
        return None
    cursor, generation, crc = _SLOT.unpack(data)
    if generation <= 0 or zlib.crc32(data[:16]) != crc:
        return None
    return generation, cursor


class SavedCursor:
    """One cursor file; :attr:`saved` is the value known to be on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: int | None = None  # the value on disk (written by the saver thread)
        self.saves = 0
        self._generation = 0
        self._fd: int | None = None
        self._wanted: int | None = None
        self._lock = threading.Lock()  # one writer of the file at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> int | None:
        """The saved next id, or None when nothing valid was saved."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        slots = [_unpack(data[i : i + _SLOT.size]) for i in (0, _SLOT.size)]
        valid = [s for s in slots if s is not None]
        if not valid:
            return None
        self._generation, self.saved = max(valid)
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

    def _open(self) -> int:
        """The file, created with two empty slots (and its directory entry synced)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not created and not self._generation:  # go on from what is there
            data = os.pread(fd, 2 * _SLOT.size, 0)
            gens = [_unpack(data[i : i + _SLOT.size]) for i in (0, _SLOT.size)]
            self._generation = max((g[0] for g in gens if g is not None), default=0)
        if created:
            os.pwrite(fd, bytes(2 * _SLOT.size), 0)
            os.fsync(fd)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return fd

    def _write(self, cursor: int) -> None:
        with self._lock:
            if self.saved is not None and cursor <= self.saved:
                return
            if self._fd is None:
                self._fd = self._open()
            generation = self._generation + 1
            os.pwrite(self._fd, _pack(cursor, generation), (generation % 2) * _SLOT.size)
            os.fdatasync(self._fd)
            self._generation = generation
            self.saved = cursor
            self.saves += 1

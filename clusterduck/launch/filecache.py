"""Parse a file once per version of it: ``up`` on many hosts reads ~/.ssh/config and
known_hosts once, not once per host (about 2 ms per host, more with a long known_hosts).

A file's version is its path, size, inode, mtime and ctime: the ctime too, because a
rewrite that keeps the size and puts the old mtime back (``cp -p``, ``rsync -t``,
``touch -r``, unpacking an archive) changes only that. Timestamps are as coarse as the
kernel's clock tick, so a file rewritten with the same size within one tick would keep
its stamp; like git's "racily clean" index entries, a file whose mtime is less than
``RACY_NS`` before the moment it was parsed is parsed again on the next read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FileCache"]

T = TypeVar("T")

RACY_NS = 1_000_000_000  # far above any filesystem's timestamp granularity


class FileCache(Generic[T]):
    """``get(path)`` returns ``parse(path)``, parsed again only when the file changed."""

    def __init__(self, parse: Callable[[str], T]) -> None:
        self._parse = parse
        self._lock = threading.Lock()
        # path -> (stamp, parsed value, whether the stamp can be trusted)
        self._entries: dict[str, tuple[tuple[int, ...], T, bool]] = {}

    def get(self, path: str) -> T:
        """The parsed file; raises OSError (from ``os.stat`` or ``parse``) like a read."""
        st = os.stat(path)
        stamp = (st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._entries.get(path)
        if hit is not None and hit[0] == stamp and hit[2]:
            return hit[1]
        parsed_at = time.time_ns()
        value = self._parse(path)
        # Stamped before the parse: a change during the parse shows as a new stamp.
        trusted = parsed_at - st.st_mtime_ns >= RACY_NS
        with self._lock:
            self._entries[path] = (stamp, value, trusted)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

"""Parts of the delivery-guarantee tests (tests/test_guarantees.py): a paced spout of ids
that resumes, relays, and sinks that record what reached them."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import clusterduck

Dispatch = Callable[[int, Any], None]


def ids(
    dispatch: Dispatch,
    count: int = 20000,
    every: int = 100,
    pause: float = 0.002,
    starts: str = "",
    hold: str = "",
    hold_at: int = 4000,
) -> None:
    """``count`` ids, a pause after each ``every``; a restarted spout resumes where the
    runtime says everything before is done (and notes where it started in ``starts``).
    With ``hold``, it waits after ``hold_at`` ids until that file exists, so that a test
    kills a process in the middle of the stream whatever the machine's speed."""
    count, hold_at = int(count), int(hold_at)
    first = clusterduck.context().resume_from or 0
    if starts:
        with open(starts, "a") as f:
            f.write(f"{first}\n")
    for seq in range(first, count):
        if hold and seq == hold_at:
            while not os.path.exists(hold):
                time.sleep(0.01)
        dispatch(seq, seq)
        if seq % every == every - 1:
            time.sleep(pause)


def relay(value: int, ms: float = 0.0) -> int:
    """Pass the id on; ``ms`` of work per message keeps messages in flight to kill."""
    if ms:
        time.sleep(float(ms) / 1000)
    return value


class Recorder:
    """Appends ``seq value`` per call, line by line (a kill -9 keeps what was written)."""

    def __init__(self, out: str) -> None:
        self.file = open(out, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, *values: Any) -> None:
        self.file.write(f"{clusterduck.context().seq_id} {values[0]}\n")

    def close(self) -> None:
        self.file.close()


class Joined(Recorder):
    """A bundled sequential sink of two inputs."""

    def __call__(self, a: Any, b: Any) -> None:  # type: ignore[override]
        self.file.write(f"{clusterduck.context().seq_id} {a}\n")


def join(a: int, b: int) -> int:
    assert a == b
    return a


class SqliteSink:
    """One transaction per call: the row and the last seq id commit together, so
    ``committed()`` tells the runtime exactly what is stored."""

    def __init__(self, db: str) -> None:
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY "
            "AUTOINCREMENT, seq INTEGER, value INTEGER)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")

    def __call__(self, value: int) -> None:
        seq = clusterduck.context().seq_id
        self.db.execute("BEGIN")
        self.db.execute("INSERT INTO rows (seq, value) VALUES (?, ?)", (seq, value))
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('last', ?)", (seq,))
        self.db.execute("COMMIT")

    def committed(self) -> int | None:
        row = self.db.execute("SELECT v FROM meta WHERE k = 'last'").fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        self.db.close()


class HookedIds:
    """A spout class with Storm's ack/fail hooks: records each call, one line per id."""

    def __init__(self, log: str, count: int = 50) -> None:
        self.log = log
        self.count = int(count)

    def __call__(self, dispatch: Dispatch) -> None:
        for seq in range(self.count):
            dispatch(seq, seq)

    def ack(self, seq: int) -> None:
        with open(self.log, "a") as f:
            f.write(f"ack {seq}\n")

    def fail(self, seq: int) -> None:
        with open(self.log, "a") as f:
            f.write(f"fail {seq}\n")


def stall_once(value: int, at: int = 7, until: str = "") -> int:
    """Holds id ``at`` the first time until the file ``until`` exists (the test creates
    it once the spout replayed that id), so message_timeout expires for it."""
    if value == int(at) and not os.path.exists(until + ".passed"):
        while not os.path.exists(until):
            time.sleep(0.01)
        open(until + ".passed", "w").close()
    return value

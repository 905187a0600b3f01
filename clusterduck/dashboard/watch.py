"""One background poller per topology a page is looking at.

Status calls block (ZeroMQ requests with their own timeouts, SSH for logs), so they run
in this thread, never on the web server's event loop. Every page of a topology reads the
same latest snapshot, so ten open tabs cost one status call a second, and the rate
history keeps growing while nobody reloads. A poller nobody has read for a while stops.

If a status call hangs past :data:`STALE_AFTER` (a host that stopped answering in a way
the engine's own timeouts do not catch), the snapshot says so: every instance reads
``unreachable`` until an answer comes back.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

from ..exceptions import ClusterduckError
from . import status_source
from .history import History

__all__ = ["STALE_AFTER", "Watch", "Watches"]

INTERVAL = 1.0  # seconds between status calls: the page updates once a second
EVENTS_EVERY = 3.0  # seconds between reads of the logs' error and anomaly lines
STALE_AFTER = 20.0  # no answer this long (the engine gives up after ~15 s): unreachable
IDLE_STOP = 60.0  # nobody read the snapshot for this long: stop polling


class Watch:
    """Polls one topology; :meth:`snapshot` is what each server-sent event carries."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.history = History()
        self._lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._error: str | None = None
        self._events: list[dict[str, Any]] = []
        self._polled = clock()
        self._read = clock()
        self._started = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_events = 0.0
        while not self._stop.is_set():
            began = self.clock()
            self._poll_status()
            if began >= next_events:
                self._poll_events()
                next_events = began + EVENTS_EVERY
            if self.clock() - self._read > IDLE_STOP:
                break
            self._stop.wait(max(0.05, INTERVAL - (self.clock() - began)))

    def _poll_status(self) -> None:
        try:
            status = status_source.topology_status(self.name)
            error = None
        except ClusterduckError as exc:
            status, error = None, str(exc)
        now = self.clock()
        with self._lock:
            self._error = error
            if status is not None:
                self._status = status
                self._polled = now
                self.history.add(now, status)

    def _poll_events(self) -> None:
        try:
            events = [e.to_dict() for e in status_source.recent_events(self.name)]
        except ClusterduckError:
            return
        with self._lock:
            self._events = events

    def snapshot(self) -> dict[str, Any]:
        """The latest status, history and events; a status too old reads unreachable."""
        now = self.clock()
        with self._lock:
            self._read = now
            status = self._status
            age = now - (self._polled if status is not None else self._started)
            if status is not None and age > STALE_AFTER:
                status = _unreachable(status, age)
            return {
                "status": status,
                "age": round(age, 1),
                "error": self._error,
                "history": self.history.to_dict(now),
                "events": list(self._events),
            }


def _unreachable(status: dict[str, Any], age: float) -> dict[str, Any]:
    stale = copy.deepcopy(status)
    stale["state"] = "unreachable"
    stale["problems"] = [
        *(stale.get("problems") or []),
        f"no status answer for {age:.0f}s: hosts unreachable?",
    ]
    for comp in stale["components"]:
        for row in comp["instances"]:
            row["state"] = "unreachable"
            row["rate"] = 0.0
    return stale


class Watches:
    """The pollers of one server, started on first use and restarted after idling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, Watch] = {}

    def get(self, name: str) -> Watch:
        with self._lock:
            watch = self._watches.get(name)
            if watch is None or not watch.alive:
                watch = self._watches[name] = Watch(name).start()
            return watch

    def stop_all(self) -> None:
        with self._lock:
            for watch in self._watches.values():
                watch.stop()

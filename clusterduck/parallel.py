"""One slow call per host at once, in daemon threads: hosts are slow, not busy.

Not a ThreadPoolExecutor: on Ctrl-C the caller must stop waiting at once and clean up
what it started, but an executor's exit (and the interpreter's) waits for every call
still running, and a start can wait a minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["INTERRUPT_GRACE", "in_parallel"]

T = TypeVar("T")

# On Ctrl-C, how long calls already in flight may still finish (what they started is
# then recorded, so the caller's cleanup reaches it) before the caller stops waiting.
INTERRUPT_GRACE = 5.0


def in_parallel(
    items: list[str],
    fn: Callable[[str], T],
    *,
    on_interrupt: Callable[[], None] | None = None,
    grace: float = INTERRUPT_GRACE,
) -> dict[str, T | Exception]:
    """``fn(item)`` for every item at once: its result, or the exception it raised.

    On Ctrl-C: ``on_interrupt()`` (tell the calls to give up), then at most ``grace``
    seconds for them to finish, then the KeyboardInterrupt goes on. A call that raised
    something other than an Exception (its own KeyboardInterrupt, SystemExit) re-raises
    it here."""
    done: dict[str, T | BaseException] = {}

    def run(item: str) -> None:
        try:
            done[item] = fn(item)
        except BaseException as exc:  # noqa: BLE001 - the caller decides
            done[item] = exc

    threads = [threading.Thread(target=run, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        deadline = time.monotonic() + grace
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        raise
    results: dict[str, T | Exception] = {}
    for item in items:
        result = done[item]
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
        results[item] = result
    return results

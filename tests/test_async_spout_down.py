"""A graceful ``down`` cancels an ``async def`` spout that awaits its source, as any
asyncio service is cancelled at shutdown: its ``finally`` and ``async with`` exits run
(where a consumer is closed, offsets committed), and the down ends without waiting out
the 5 s grace for it.

Before: the spout was left behind after the grace and the process left with
``os._exit``, so those blocks never ran.

Real processes through the CLI (``lifecycle_fixtures``); the spouts record what ran in a
file the test reads once the down returned.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from lifecycle_fixtures import Clusterduck, instance
from test_idle_spout_down import _down_once_through
from topology_files import write_topology

from clusterduck.runtime.spout import EXECUTOR_SUFFIX, SpoutBridge, threads_left

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

PARTS = '''\
import asyncio


def note(path, word):
    with open(path, "a") as f:
        f.write(word + "\\n")


async def ten_then_sleep(dispatch, out):
    """A function spout that sends ten ids, then awaits a source that never answers."""
    try:
        for i in range(10):
            await dispatch(i, i)
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        note(out, "cancelled")
        raise
    finally:
        note(out, "finally")


async def cleanup_never_ends(dispatch, out):
    """Its finally awaits something that never comes: the down waits the grace, no more."""
    for i in range(10):
        await dispatch(i, i)
    try:
        await asyncio.sleep(3600)
    finally:
        note(out, "finally")
        await asyncio.Event().wait()


class Consumer:
    """Stands for a client with an async context manager (aiokafka's and the like)."""

    def __init__(self, out):
        self.out = out

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await asyncio.sleep(0)  # an exit that awaits (a commit, a close)
        note(self.out, "aexit " + (exc[0].__name__ if exc[0] else "-"))


class QueueSpout:
    """A class spout that sends ten ids, then awaits a queue nothing feeds."""

    def __init__(self, out):
        self.out = out

    async def __call__(self, dispatch):
        queue = asyncio.Queue()
        async with Consumer(self.out):
            for i in range(10):
                await dispatch(i, i)
            await queue.get()

    def close(self):
        note(self.out, "close")


def keep(value):
    return value
'''


def _run(duck: Clusterduck, label: str, entry: str) -> tuple[list[str], str]:
    """``up`` a spout → sink topology, ``down`` once the sink has the ten ids; the lines
    the spout wrote, and the spout's log."""
    (duck.tmp / "async_down_parts.py").write_text(PARTS)
    out = duck.tmp / f"{label}.out"
    name, topology = write_topology(
        duck,
        label,
        duck.tmp,
        [f"{{name: source, entry: 'async_down_parts:{entry}', args: {{out: '{out}'}}}}"],
        ["{name: sink, entry: 'async_down_parts:keep', inputs: [source]}"],
    )
    started = duck.run("up", str(topology))
    assert started.returncode == 0, started.stderr
    final = _down_once_through(duck, name, 10)  # (and nothing killed)
    assert [r["state"] for c in final["components"] for r in c["instances"]] == ["finished"] * 2
    assert instance(final, "sink")["received"] == 10
    assert instance(final, "source")["errors"] == 0
    assert not duck.leftovers(name)
    log = duck.run("logs", name, "source")
    return (out.read_text().splitlines() if out.exists() else []), log.stdout + log.stderr


def test_down_cancels_an_async_spout_that_awaits_its_source(duck: Clusterduck) -> None:
    written, log = _run(duck, "asleep", "ten_then_sleep")
    assert written == ["cancelled", "finally"]
    # Its stream ended by the cancellation, not by the grace running out.
    assert "did not call dispatch" not in log


def test_down_runs_an_async_class_spouts_async_with_exit_then_close(duck: Clusterduck) -> None:
    written, log = _run(duck, "aqueue", "QueueSpout")
    assert written == ["aexit CancelledError", "close"]
    assert "did not call dispatch" not in log


def test_a_cancelled_spout_whose_cleanup_never_ends_is_left_after_the_grace(
    duck: Clusterduck,
) -> None:
    written, log = _run(duck, "astuck", "cleanup_never_ends")
    assert written == ["finally"]
    assert "did not end after it was cancelled within 5 s of the graceful down" in log


# -- the bridge alone (no sockets: a waker that wakes nobody) --------------------------------


class Waker:
    def send(self, frames: Sequence[bytes], *, block: bool = True) -> bool:
        return True


def _spout_thread(bridge: SpoutBridge, spout: Callable[..., Any]) -> threading.Thread:
    thread = threading.Thread(target=bridge.run, args=(spout, True), daemon=True)
    thread.start()
    return thread


def test_stop_cancels_the_task_once_and_its_cleanup_may_await() -> None:
    """The cancel comes once: a second would interrupt the ``finally`` that awaits."""
    bridge = SpoutBridge(10, Waker())
    seen: list[str] = []
    waiting, cleaning, stopped_again = threading.Event(), threading.Event(), threading.Event()

    async def spout(dispatch: Callable[[int, Any], Awaitable[None]]) -> None:
        await dispatch(0, "a")
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            # A cleanup that awaits (a commit, a close), while a second STOP comes.
            cleaning.set()
            await asyncio.to_thread(stopped_again.wait, 10)
            await asyncio.sleep(0.01)
            seen.append("finally")

    thread = _spout_thread(bridge, spout)
    assert waiting.wait(10)
    bridge.stop()
    assert cleaning.wait(10)
    bridge.stop()  # (a second STOP, as a restarted down may send) during the cleanup
    stopped_again.set()
    thread.join(10)
    assert not thread.is_alive()
    assert seen == ["cancelled", "finally"]
    assert bridge.error is None  # the end of the stream, not an error
    assert bridge.take(10) == ([0], ["a"])
    assert bridge.done and not bridge.abandoned


def test_a_down_before_the_task_runs_ends_it_at_its_first_await() -> None:
    bridge = SpoutBridge(10, Waker())
    bridge.stop()
    reached: list[str] = []

    async def spout(dispatch: Callable[[int, Any], Awaitable[None]]) -> None:
        reached.append("start")
        await asyncio.Event().wait()
        reached.append("past the await")

    thread = _spout_thread(bridge, spout)
    thread.join(10)
    assert not thread.is_alive()
    assert "past the await" not in reached
    assert bridge.error is None and bridge.done


def test_a_cancel_that_is_not_the_downs_is_the_spouts_error() -> None:
    bridge = SpoutBridge(10, Waker())

    async def spout(dispatch: Callable[[int, Any], Awaitable[None]]) -> None:
        inner = asyncio.ensure_future(asyncio.Event().wait())
        await asyncio.sleep(0)
        inner.cancel()
        await inner  # raises CancelledError into the spout: nobody asked it to stop

    thread = _spout_thread(bridge, spout)
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(bridge.error, asyncio.CancelledError)


def test_threads_left_names_the_executors_threads_still_reading() -> None:
    """An async spout cancelled while it awaits ``asyncio.to_thread``: the read goes on
    in the loop's executor thread (a daemon, but joined at exit), which threads_left
    names; the process then leaves without waiting for it."""
    bridge = SpoutBridge(10, Waker())
    release = threading.Event()
    reading = threading.Event()

    def blocking_read() -> None:
        reading.set()
        release.wait(30)

    async def spout(dispatch: Callable[[int, Any], Awaitable[None]]) -> None:
        await asyncio.to_thread(blocking_read)

    before = set(threading.enumerate())
    thread = threading.Thread(target=bridge.run, args=(spout, True), name="spout-t/0")
    thread.daemon = True
    thread.start()
    try:
        assert reading.wait(10)
        bridge.stop()
        thread.join(10)
        assert not thread.is_alive()  # the loop did not wait for its executor
        left = threads_left(before, thread)
        assert [t.name.startswith("spout-t/0" + EXECUTOR_SUFFIX) for t in left] == [True]
    finally:
        release.set()
    left[0].join(10)
    assert threads_left(before, thread) == []


def test_a_task_of_the_spout_that_raises_at_its_end_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The spout's other tasks are cancelled when it ends, as under ``asyncio.run``; one
    that raises then is logged (asyncio's exception handler), not lost."""
    bridge = SpoutBridge(10, Waker())

    async def spout(dispatch: Callable[[int, Any], Awaitable[None]]) -> None:
        async def background() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                raise RuntimeError("closing the client failed")

        asyncio.ensure_future(background())
        await asyncio.sleep(0)

    thread = _spout_thread(bridge, spout)
    thread.join(10)
    assert not thread.is_alive() and bridge.error is None
    assert "closing the client failed" in caplog.text

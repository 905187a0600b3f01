"""The spout hand-off's room follows what the I/O loop allows (credit, ``max_pending``):
what it takes still counts until the loop gives the room back. No sockets: a fake waker."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence

from clusterduck.runtime.spout import PACED_WINDOW, SpoutBridge, SpoutStopped


class Waker:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, frames: Sequence[bytes], *, block: bool = True) -> bool:
        self.sent += 1
        return True


def pairs(columns: tuple[Sequence[int], list[object]]) -> list[tuple[int, object]]:
    return list(zip(*columns, strict=True))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_taken_messages_keep_their_room_until_the_loop_gives_it_back() -> None:
    bridge = SpoutBridge(2, Waker())
    bridge.dispatch(0, "a")
    bridge.dispatch(1, "b")
    assert bridge.take(10) == ([0, 1], ["a", "b"])
    assert bridge.limit == 0  # both still pending downstream: no room yet
    third = threading.Thread(target=bridge.dispatch, args=(2, "c"), daemon=True)
    third.start()
    bridge.set_limit(1)  # the loop sent them and has credit for one more
    assert wait_for(lambda: len(bridge) == 1)
    third.join(timeout=10)
    assert not third.is_alive()


def test_a_graceful_down_ends_a_dispatch_that_waits_for_room() -> None:
    bridge = SpoutBridge(0, Waker())  # max_pending used up: dispatch waits
    raised: list[BaseException] = []

    def spout() -> None:
        try:
            bridge.dispatch(0, "a")
        except SpoutStopped as exc:
            raised.append(exc)

    thread = threading.Thread(target=spout, daemon=True)
    thread.start()
    bridge.stop()
    thread.join(timeout=10)
    assert raised and len(bridge) == 0


class Pump:
    """Takes everything queued, as the process's pump does; checks it holds the lock."""

    def __init__(self, bridge: SpoutBridge) -> None:
        self.bridge = bridge
        self.batches: list[list[tuple[int, object]]] = []  # as pairs
        self.locked: list[bool] = []

    def __call__(self) -> bool:
        self.locked.append(self.bridge.lock.locked())
        self.batches.append(pairs(self.bridge.take(100)))
        return False


def test_a_message_that_comes_alone_is_sent_by_the_spout_thread_itself() -> None:
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=1000.0)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    bridge.idle()  # the I/O loop sleeps: a hand-off would wake it
    bridge.dispatch(0, "a")  # the first message comes alone
    assert pump.batches == [[(0, "a")]] and pump.locked == [True]
    assert len(bridge) == 0 and waker.sent == 0  # sent in place: nothing to wake for
    assert not bridge.lock.locked()


def test_messages_that_come_fast_are_left_to_the_io_loop_to_frame_together() -> None:
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=1000.0, stale=1000.0)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    bridge.dispatch(0, "a")
    bridge.idle()
    for i in range(1, 6):  # within `gap` of the one before
        bridge.dispatch(i, "x")
    assert len(pump.batches) == 1  # only the first was sent in place
    assert bridge.take(100) == ([1, 2, 3, 4, 5], ["x"] * 5)  # one frame's worth
    assert waker.sent == 1  # the sleeping loop was woken once


def test_dispatch_waits_only_a_moment_for_the_io_loop_holding_the_lock() -> None:
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=0.0)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    with bridge.lock:  # the I/O loop is in the middle of a turn (and stays there)
        bridge.dispatch(0, "a")
    assert pump.batches == [] and len(bridge) == 1  # queued for the loop's next turn


def test_a_paced_spout_waits_for_the_io_loops_turn_to_end_then_sends_itself() -> None:
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=0.0, handoff=60.0)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    for i in range(3):  # slow dispatches over two windows: a paced spout
        bridge.dispatch(i, "a")  # sent in place (the lock is free)
        time.sleep(PACED_WINDOW)
    bridge.lock.acquire()  # the I/O loop is in the middle of a turn ...
    threading.Timer(0.05, bridge.lock.release).start()  # ... that ends before `handoff`
    bridge.dispatch(3, "b")
    assert pump.batches[-1] == [(3, "b")] and len(pump.batches) == 4 and len(bridge) == 0


def test_messages_that_waited_for_the_io_loop_are_sent_by_the_next_dispatch() -> None:
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=1000.0, stale=0.001)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    bridge.dispatch(0, "a")  # the first comes alone
    time.sleep(PACED_WINDOW)
    bridge.dispatch(1, "b")  # one slow window is not yet a paced spout: left to the loop
    assert pump.batches == [[(0, "a")]] and len(bridge) == 1
    time.sleep(PACED_WINDOW)
    bridge.dispatch(2, "c")  # two are: "b" waited longer than `stale`, it goes along
    assert pump.batches[1:] == [[(1, "b"), (2, "c")]] and len(bridge) == 0
    bridge.dispatch(3, "d")  # too soon after: left to the (busy) I/O loop
    assert len(pump.batches) == 2 and len(bridge) == 1
    deadline = time.monotonic() + 0.002
    while time.monotonic() < deadline:  # "d" waits longer than `stale`
        pass
    bridge.dispatch(4, "e")
    assert pump.batches[2:] == [[(3, "d"), (4, "e")]] and len(bridge) == 0
    assert waker.sent == 0


def test_a_pump_that_leaves_messages_waiting_for_credit_wakes_the_sleeping_io_loop() -> None:
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=0.0)
    left: list[bool] = [False]

    def pump() -> bool:
        bridge.take(100)  # framed, but (left[0]) not all sent for want of credit
        return left[0]

    bridge.set_pump(pump)
    bridge.idle()
    bridge.dispatch(0, "a")
    assert waker.sent == 0  # all sent: the loop sleeps on
    left[0] = True
    bridge.dispatch(1, "b")
    assert waker.sent == 1  # it waits for credit itself (FD edges may have been read)
    bridge.dispatch(2, "c")
    assert waker.sent == 1  # once: it is awake now


def test_a_pump_after_the_loops_last_turn_keeps_it_from_sleeping() -> None:
    """The I/O loop's turn found nothing to do; before it says it sleeps, a pump sends
    from the spout thread and leaves messages waiting for credit. The pump saw the loop
    awake and woke nobody: the loop must not sleep now (it would until the next report,
    while the grants it needs may already have been read by the pump)."""
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=0.0)

    def pump() -> bool:
        bridge.take(100)
        return True  # left waiting for credit

    bridge.set_pump(pump)
    bridge.dispatch(0, "a")  # alone: sent in place, between the turn and idle()
    assert waker.sent == 0 and len(bridge) == 0
    assert not bridge.idle()  # one more turn first
    assert bridge.idle()  # ... after which it may sleep


def test_a_flood_stays_with_the_io_loop_however_long_it_waited() -> None:
    waker = Waker()
    bridge = SpoutBridge(10_000, waker, gap=1000.0, stale=0.0)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    with bridge.lock:  # the I/O loop is busy: the first message waits for it too
        bridge.dispatch(0, 0)
    for i in range(1, 2000):  # back to back: a few microseconds apart, not INLINE_GAP
        bridge.dispatch(i, i)
    # Every dispatch found a message that waited longer than `stale` (0): sent by the
    # spout thread each time, that would be ~2,000 one-message frames. Only a dispatch
    # that comes INLINE_GAP after the one before (the thread was descheduled, or the
    # garbage collector ran) may pump, taking along all that queued meanwhile.
    assert len(pump.batches) <= 40, len(pump.batches)
    assert len(bridge) + sum(map(len, pump.batches)) == 2000


def test_ids_and_values_stay_paired_while_the_loop_takes_during_dispatch() -> None:
    """The two columns are appended one after the other, and taken while the spout thread
    appends: every id still comes with its own value, in order, none lost."""
    bridge = SpoutBridge(1_000, Waker())
    n = 50_000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: inside dispatch too

    def spout() -> None:
        for i in range(n):
            bridge.dispatch(i, -i)

    try:
        thread = threading.Thread(target=spout, daemon=True)
        thread.start()
        got_ids: list[int] = []
        got_values: list[object] = []
        deadline = time.monotonic() + 60
        while len(got_ids) < n and time.monotonic() < deadline:
            seqs, values = bridge.take(7)
            got_ids += seqs
            got_values += values
            bridge.set_limit(1_000)  # room again, as the loop gives it back once sent
        thread.join(timeout=10)
    finally:
        sys.setswitchinterval(interval)
    assert got_ids == list(range(n))
    assert got_values == [-i for i in got_ids]


def test_the_pump_takes_without_shrinking_the_room() -> None:
    """The pump runs in the spout's own thread, which dispatches nothing meanwhile: what
    it takes leaves the room as the credit made it (no shrink, no set_limit to undo it)."""
    bridge = SpoutBridge(3, Waker())
    bridge.dispatch(0, "a")
    bridge.dispatch(1, "b")
    assert bridge.take(10, shrink=False) == ([0, 1], ["a", "b"])
    assert bridge.limit == 3
    for i in range(2, 5):  # room for three again, without waiting
        bridge.dispatch(i, "c")
    assert len(bridge) == 3


def test_a_hand_off_returns_as_soon_as_the_loop_took_the_message() -> None:
    """``take`` wakes a dispatch that waits for the hand-off (the Event is set only when
    someone waits): with `handoff` a minute, a dispatch that missed it would hang.
    (Fails if dispatch raises the flag after sending the wake-up, or take ignores it.)"""
    waker = Waker()
    bridge = SpoutBridge(100, waker, handoff=60.0)
    bridge.idle()  # the I/O loop sleeps: dispatch hands over and waits for the take
    spout = threading.Thread(target=bridge.dispatch, args=(0, "a"), daemon=True)
    spout.start()
    assert wait_for(lambda: waker.sent == 1)
    assert bridge.take(10) == ([0], ["a"])
    spout.join(timeout=10)
    assert not spout.is_alive()


def test_a_paced_spout_sends_in_place_while_the_io_loop_sleeps() -> None:
    """Handing over to the sleeping loop would wake it and wait for its turn to end: a
    paced spout sends itself instead, however soon after the one before (within `gap`,
    `stale`). (Fails on the gate without the sleeping loop: handed over, woken.)"""
    waker = Waker()
    bridge = SpoutBridge(100, waker, gap=1000.0, stale=1000.0)
    pump = Pump(bridge)
    bridge.set_pump(pump)
    bridge.dispatch(0, "a")  # the first comes alone
    for i in range(1, 3):  # slow dispatches over two windows: a paced spout
        time.sleep(PACED_WINDOW)
        bridge.dispatch(i, "b")  # the I/O loop is busy: it takes them
        bridge.take(100)
        bridge.set_limit(100)
    deadline = time.monotonic() + 0.001
    while time.monotonic() < deadline:  # INLINE_GAP after the last one returned
        pass
    bridge.idle()  # the I/O loop sleeps
    bridge.dispatch(3, "c")
    assert pump.batches[-1] == [(3, "c")] and len(bridge) == 0
    assert waker.sent == 0


def test_a_spout_that_waits_for_its_source_is_not_waited_for_after_a_down() -> None:
    """A graceful down ends the stream of a spout that never calls dispatch again (it
    sleeps, or blocks reading its source) once the grace is over; one that did call it
    (and got SpoutStopped) is on its way out and is waited for."""
    bridge = SpoutBridge(10, Waker(), grace=0.05)
    bridge.dispatch(0, "a")
    bridge.stop()
    assert not bridge.done  # "a" is still queued
    assert bridge.take(10) == ([0], ["a"])
    deadline = bridge.stop_deadline()
    assert deadline is not None
    assert wait_for(lambda: bridge.done)  # before: only when the spout function returned
    assert bridge.abandoned

    back = SpoutBridge(10, Waker(), grace=0.05)
    back.stop()
    try:
        back.dispatch(1, "b")
    except SpoutStopped:
        pass
    assert back.stop_deadline() is None
    assert not wait_for(lambda: back.done, timeout=0.3)  # its finally may take a while
    assert not back.abandoned


class WatchedEvent(threading.Event):
    """An Event that runs ``on_clear`` once, just before its first clear (the other
    thread's move at that instant), says when someone waits, and records whether each
    wait was ended by a set (True) or by its timeout (False)."""

    def __init__(self, on_clear: Callable[[], None]) -> None:
        super().__init__()
        self.on_clear: Callable[[], None] | None = on_clear
        self.waiting = threading.Event()
        self.waits: list[bool] = []

    def clear(self) -> None:
        hook, self.on_clear = self.on_clear, None
        if hook is not None:
            hook()
        super().clear()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        got = super().wait(timeout)
        self.waits.append(got)
        return got


def test_room_given_while_dispatch_starts_waiting_is_not_missed() -> None:
    """The I/O loop moves the limit (still full) just as dispatch starts waiting for
    room, then gives room: dispatch is woken by that, not by its 0.2 s poll (with the
    flag raised before the clear, the first set_limit lowered it and set the Event,
    the clear wiped that, and the room given later woke nobody)."""
    bridge = SpoutBridge(2, Waker())
    bridge.dispatch(0, "a")
    bridge.dispatch(1, "b")
    room = bridge._room = WatchedEvent(lambda: bridge.set_limit(1))

    def loop() -> None:
        room.waiting.wait(10)
        bridge.take(2)
        bridge.set_limit(5)

    other = threading.Thread(target=loop, daemon=True)
    other.start()
    bridge.dispatch(2, "c")
    other.join(10)
    assert room.waits == [True]

"""The spout hand-off's room follows what the I/O loop allows (credit, ``max_pending``):
what it takes still counts until the loop gives the room back. No sockets: a fake waker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from clusterduck.runtime.spout import SpoutBridge, SpoutStopped


class Waker:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, frames: Sequence[bytes], *, block: bool = True) -> bool:
        self.sent += 1
        return True


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
    assert bridge.take(10) == [(0, "a"), (1, "b")]
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

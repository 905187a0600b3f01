"""The hand-off between a spout's own thread and its process's I/O loop.

The user's spout function runs in a thread of its own and calls ``dispatch`` for every
message; the I/O loop takes what is waiting in batches, frames and sends it. The queue
between them is bounded (``limit``): a spout that runs ahead of the network waits in
``dispatch`` — that is how back-pressure reaches a spout. The I/O loop moves the limit
with the credit its outputs hold and the spout's ``max_pending`` (:meth:`set_limit`; 0
holds ``dispatch``), so a graceful ``down`` drains within about one credit window. A
graceful ``down`` makes the next ``dispatch`` raise :class:`SpoutStopped`, which ends the
spout's stream. An ``async def`` spout's task is also cancelled at the down, from its own
event loop's thread (as any asyncio service is at shutdown): one that awaits its source
gets ``CancelledError`` there, which ends its stream, so its ``finally`` and
``async with`` blocks run (:meth:`SpoutBridge.stop`, :meth:`SpoutBridge.run`).

A message that comes alone is sent by the spout's own thread, inside ``dispatch``
(:meth:`SpoutBridge.set_pump`): the I/O loop's state and sockets are guarded by
:attr:`SpoutBridge.lock`. That saves the hand-off to the other thread (two thread
wake-ups, and the GIL passed back and forth), most of a trickle's latency in the spout.
"Alone": the last ``dispatch`` returned at least ``INLINE_GAP`` ago, and at least
``INLINE_FACTOR`` times the CPU time sending one message took on average, or
``INLINE_MAX_GAP`` ago in any case. Messages that come faster go to the I/O loop, which
frames what has queued meanwhile: a flood still leaves in large frames. But messages that
waited ``INLINE_STALE`` for the loop are sent, all in one frame, by the next ``dispatch``
of a *paced* spout (fewer than one dispatch per ``INLINE_GAP`` over the last
two ``PACED_WINDOW``), never in a flood. Once a flood is plain (the last window was
one, and the message before still waits for the I/O loop), ``dispatch`` only queues: no
clock, no counts, until the loop runs out of messages (:meth:`SpoutBridge.idle`). Those
reads cost a flood about as much as the user's loop and the queue together.

Every zmq send, receive and poll gives the GIL up, and a spout thread that keeps it
(computing, or spinning to pace itself) makes the I/O loop wait for it at each of them, up
to the interpreter's switch interval. So a paced spout that finds the loop in the middle
of a turn waits for the turn to end (at most ``HANDOFF_WAIT``) rather than leaving its
message behind; the flood keeps running alongside the loop. A paced spout that finds the
loop asleep sends in place whatever the gap: a hand-off would wait for the loop's turn.

The pump is kept cheap, as its cost gates it: the Events below are set only when a thread
waits on them, the room is not shrunk and given back around the pump's own take, and
grants are read only when due (:meth:`Outbox.grants_due`).

Otherwise the I/O loop sleeps in a poll when there is nothing to send; ``dispatch`` wakes it
through an inproc socket pair, but only when the loop said it is about to sleep
(:meth:`SpoutBridge.idle`), so a busy spout pays for no wake-up messages; it then waits up
to ``HANDOFF_WAIT`` for the loop to take the message (a paced spout: and send it), handing
it the GIL at once instead of after the switch interval. A pump that leaves messages
waiting for credit also wakes a sleeping loop, which then waits for grants itself: the
pump's reads of the data sockets may have consumed the FD edges the sleeping loop watches;
and a loop about to sleep that such a pump saw still awake takes one more turn first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from itertools import repeat
from typing import Any, Protocol

from ..protocol import Columns

__all__ = [
    "EXECUTOR_SUFFIX",
    "HANDOFF_WAIT",
    "INLINE_FACTOR",
    "INLINE_GAP",
    "INLINE_MAX_GAP",
    "INLINE_STALE",
    "PACED_WINDOW",
    "STOP_GRACE",
    "SWITCH_INTERVAL",
    "SpoutBridge",
    "SpoutStopped",
    "threads_left",
]

#: The longest ``dispatch`` waits for the idle I/O loop to take a message over.
HANDOFF_WAIT = 0.001
#: The interpreter's thread switch interval in a spout process (CPython's default is
#: 5 ms). The I/O loop gives up the GIL in every send and poll; a spout thread that
#: keeps computing (or spinning to pace itself) then holds it until the interval ends,
#: and every message it dispatches meanwhile waits that long to go out.
SWITCH_INTERVAL = 0.0002
#: A message dispatched at least this long after the previous dispatch returned is sent by
#: the spout's own thread (see the module's docstring); faster ones are framed together by
#: the I/O loop.
INLINE_GAP = 0.00005
#: ... and at least this many times the CPU time the last such send took: a spout whose
#: own work between two dispatches is shorter would spend most of its time sending
#: one-message frames (it then spends at most 1 / (1 + INLINE_FACTOR) of it on sending).
INLINE_FACTOR = 1.5
#: ... but a message this long after the previous one is always sent at once: one slow
#: send (a cold cache, a page fault) must not leave a trickle on the hand-off.
INLINE_MAX_GAP = 0.0005
#: ... and messages that came too fast for that, but have waited this long for the I/O
#: loop, are sent by the next ``dispatch`` of a paced spout (fewer than one dispatch per
#: ``INLINE_GAP`` over ``PACED_WINDOW``; all that waits, in one frame; a flood stays with the
#: I/O loop): a spout thread
#: that keeps the GIL (computing, or spinning to pace itself) leaves the I/O loop waiting
#: a switch interval for it at every system call of its turn, a millisecond or more.
INLINE_STALE = 0.0002
#: The window over which a spout's rate is counted to tell a paced spout (fewer than one
#: dispatch per ``INLINE_GAP``) from a flood, which also pauses now and then.
PACED_WINDOW = 0.005


#: After a graceful ``down``, how long a spout that has not called ``dispatch`` since (it
#: waits for its source: a sleep, a blocking read, a poll) is given before its stream
#: ends without it: anything it dispatched from then on would be refused anyway. Long
#: enough for a consumer's long poll (a Kafka-style ``poll(timeout)``) to come back,
#: reach ``dispatch`` and run its ``finally`` (committing what it read). An async spout,
#: cancelled at the down, has as long for its ``finally`` and ``async with`` exits.
STOP_GRACE = 5.0


#: The default executor's threads of an async spout are named after the spout's thread
#: with this suffix (and a number).
EXECUTOR_SUFFIX = "-to_thread"


def threads_left(before: set[threading.Thread], spout: threading.Thread) -> list[threading.Thread]:
    """The threads a spout's code started (not in ``before``) that an ordinary exit of the
    process would wait for: those that are not daemons, and its async loop's executor's
    (the interpreter joins every executor's threads at exit, daemons or not)."""
    executor = f"{spout.name}{EXECUTOR_SUFFIX}"
    pooled = _executor_threads()
    return [
        t
        for t in threading.enumerate()
        if t not in before
        and t is not spout
        and t.is_alive()
        and (not t.daemon or t.name.startswith(executor) or t in pooled)
    ]


def _executor_threads() -> set[threading.Thread]:
    """The threads of every ThreadPoolExecutor, which the interpreter joins at exit
    daemons or not (a spout's own pool, ``run_in_executor(pool, ...)``). CPython's
    registry; empty where it is not there."""
    import concurrent.futures.thread as pool_threads

    queues = getattr(pool_threads, "_threads_queues", None)
    return set(queues) if isinstance(queues, Mapping) else set()


class SpoutStopped(BaseException):
    """Raised inside ``dispatch`` on a graceful ``down``: the spout's stream ends here.

    A BaseException, so that a spout's own ``except Exception`` does not swallow it."""


class Waker(Protocol):
    """The sending end of a wake-up channel (a transport socket)."""

    def send(self, frames: Any, *, block: bool = True) -> bool: ...


class SpoutBridge:
    """A bounded queue of messages from the spout thread to the I/O loop, kept as two
    columns (ids, values) as frames carry them: no pair per message to build, take
    apart and free (runtime/chunks.py)."""

    def __init__(
        self,
        limit: int,
        wake: Waker,
        *,
        gap: float = INLINE_GAP,
        max_gap: float = INLINE_MAX_GAP,
        stale: float = INLINE_STALE,
        handoff: float = HANDOFF_WAIT,
        grace: float = STOP_GRACE,
    ) -> None:
        self.limit = limit
        self._wake = wake
        # The values; their ids, appended first (so never fewer ids than values).
        self._queue: deque[Any] = deque()
        self._seqs: deque[int] = deque()
        self._room = threading.Event()
        self._done = threading.Event()
        self._taken = threading.Event()  # the I/O loop took what was handed over
        # A thread waits for _room (dispatch) or _taken (a hand-off): only then are they
        # set. An Event's set is a Condition's notify in Python, a few microseconds each
        # that the pump and the I/O loop would otherwise pay on every message. The room's
        # waiter clears the Event, then raises its flag, then looks again at the limit;
        # the hand-off's raises its flag, then clears (nothing to look at: a set it
        # misses costs one short HANDOFF_WAIT). The setter writes before it reads.
        self._wants_room = False
        self._wants_taken = False
        self._io_idle = False
        self._left = False  # a pump left messages waiting (for credit) since idle()
        self.stopping = False  # set by the I/O loop on a graceful down
        self._stop_at = math.inf  # when the stream ends without the spout (stop())
        self._grace = grace
        # dispatch refused a message since the down: the spout's thread is back in its
        # own code on the way out (a finally, a close of its source): waited for.
        self._refused = False
        #: Set by the I/O loop when it leaves an abandoned spout's thread behind: the
        #: wake-up socket is about to close.
        self.closed = False
        self.error: BaseException | None = None  # what the spout raised, if anything
        # An async spout's task: cancels it from any thread (set once its loop runs);
        # it is cancelled once, by whichever of stop() and the task's start comes last.
        self._cancel: Callable[[], object] | None = None
        self._cancel_lock = threading.Lock()
        self._cancelled = False
        #: Held by whoever uses the I/O loop's state and sockets (the loop, or a pump).
        self.lock = threading.Lock()
        self._pump: Callable[[], bool] | None = None
        # A flood: dispatch only queues while the I/O loop is busy (no clock, no counts).
        # Without a pump there is nothing to count: always.
        self._flood = True
        self._last = -math.inf  # when dispatch last returned (about)
        self._first = math.inf  # when the oldest message queued now was queued (about)
        self._stale = stale
        self._handoff = handoff
        # Dispatches counted since _window began, and whether the last window was paced.
        self._window, self._count, self._paced = time.monotonic(), 0, False
        self._slow = False  # the last window was slow (two make a paced spout)
        self._min_gap, self._max_gap = gap, max(gap, max_gap)
        self._gap = gap  # the least gap before a message after which it is pumped
        self._cost = 0.0  # CPU seconds sending one message took (moving average)

    def __len__(self) -> int:
        return len(self._queue)

    # -- the spout thread ------------------------------------------------------------

    def dispatch(self, seq: int, value: Any) -> None:
        """Queue one message, waiting while the queue is full."""
        queue = self._queue
        if self.stopping:
            raise self._refuse()
        while len(queue) >= self.limit:
            # Clear, raise the flag, look again (in that order: a set_limit that saw
            # the flag down wrote its limit before the look; one that saw it up sets
            # the Event after the clear). stop() sets it unconditionally.
            self._room.clear()
            self._wants_room = True
            if self.stopping:
                raise self._refuse()
            if len(queue) < self.limit:
                break
            self._room.wait(0.2)
            if self.stopping:
                raise self._refuse()
        self._seqs.append(seq)
        queue.append(value)
        # A flood, and the I/O loop is busy (it takes what queued at its next turn):
        # nothing else to do. Read after the append, as idle() writes before it reads
        # the queue: one of the two threads sees the other's.
        if self._flood and not self._io_idle:
            return
        self._after_append(queue)

    def _after_append(self, queue: deque[Any]) -> None:
        """The rest of ``dispatch`` when not in a flood: send in place, or hand over."""
        paced = False
        if self._pump is not None:
            now = time.monotonic()
            if len(queue) == 1:
                self._first = now
            if self._flood:
                # The first dispatch since the flood (the I/O loop caught up, or went to
                # sleep): the rate is counted again from here. Its gap is unknown (the
                # flood skipped the clock), so it is not sent in place.
                self._flood = False
                self._window, self._count, self._paced, self._slow = now, 0, False, False
                self._last = now
            gap = now - self._last
            # Paced: fewer dispatches than one per INLINE_GAP over each of the last two
            # PACED_WINDOWs. Not this gap alone, nor one window: a flood pauses too,
            # whenever the I/O loop holds the GIL or the machine runs something else.
            self._count += 1
            if now - self._window >= PACED_WINDOW:
                slow = self._count * INLINE_GAP < now - self._window
                self._paced, self._slow = slow and self._slow, slow
                self._window, self._count = now, 0
            # ... and this dispatch comes INLINE_GAP after the one before returned: a
            # spout behind its pace (it waited here) catches up without waiting again.
            paced = self._paced and gap >= INLINE_GAP
            # A paced spout sends in place whenever the I/O loop sleeps, whatever the send
            # costs: handing over would wake the loop and wait for its turn to end (below),
            # the same work and the wake-ups on top, the GIL passed back and forth.
            if (
                gap >= self._gap or (paced and (self._io_idle or now - self._first >= self._stale))
            ) and (
                # A paced spout waits (a little) for the I/O loop's turn to end: waiting
                # hands it the GIL, which it otherwise waits for at every system call.
                self.lock.acquire(blocking=False)
                or (paced and self.lock.acquire(timeout=self._handoff))
            ):
                alone, began = len(queue) == 1, time.thread_time()
                try:
                    left = self._pump()
                finally:
                    self.lock.release()
                if left:
                    # Read by idle(): a loop that finished its turn before this pump
                    # but has not said it sleeps yet must look again (we see it awake).
                    self._left = True
                if alone:  # what one message costs to send (a moving average)
                    cost = time.thread_time() - began
                    self._cost += 0.25 * (cost - self._cost)
                    self._gap = min(self._max_gap, max(self._min_gap, INLINE_FACTOR * self._cost))
                self._last = time.monotonic()
                if not queue and not left:
                    return
            elif paced:
                self._last = time.monotonic()  # not `now`: the wait for the lock counts
            else:
                self._last = now  # (a flood: no second clock read per message)
                # A flood for sure (the last window was one, this message came right
                # after the last, and the one before it still waits for the I/O loop):
                # until the loop runs out of messages, dispatch only queues.
                self._flood = gap < INLINE_GAP and not self._slow and len(queue) > 1
        if self._io_idle:
            self._flood = self._pump is None  # (without a pump, nothing to count)
            # Wake the sleeping I/O loop for what is queued, or for what the pump left
            # waiting for credit: it then waits for grants itself (level-triggered), not
            # only on the sockets' FD edges, which the pump's reads may have consumed.
            self._io_idle = False
            self._wants_taken = True
            self._taken.clear()
            self._wake.send((b"",), block=False)
            if queue:
                # Give the idle I/O loop the GIL now: otherwise a spout that keeps
                # computing holds it for the interpreter's switch interval.
                self._taken.wait(self._handoff)
                self._wants_taken = False
                if paced and self.lock.acquire(timeout=self._handoff):
                    # ... and until it sent what it took, if the spout is not flooding:
                    # each send and poll of its turn gives the GIL up and waits for it.
                    self.lock.release()
                self._last = time.monotonic()
            self._wants_taken = False

    def _refuse(self) -> SpoutStopped:
        self._refused = True
        return SpoutStopped()

    async def dispatch_async(self, seq: int, value: Any) -> None:
        """``dispatch`` for async spouts: the wait for room does not block the event loop."""
        if len(self._queue) >= self.limit and not self.stopping:
            import asyncio  # only async spouts pay for it

            await asyncio.to_thread(self._wait_for_room)
        self.dispatch(seq, value)

    def _wait_for_room(self) -> None:
        while len(self._queue) >= self.limit and not self.stopping:
            self._room.clear()  # then the flag, then look again (see dispatch)
            self._wants_room = True
            if self.stopping or len(self._queue) < self.limit:
                break
            self._room.wait(0.2)

    def run(self, call: Callable[..., Any], is_async: bool) -> None:
        """The spout thread's body: the user's function, then the end of its stream."""
        try:
            if is_async:
                self._run_async(call)
            else:
                call(self.dispatch)
        except SpoutStopped:
            pass
        except Exception as exc:  # noqa: BLE001 - the I/O loop decides what it means
            self.error = exc
        finally:
            self._done.set()
            if not self.closed:  # (abandoned: the process may be closing its sockets)
                try:
                    self._wake.send((b"",), block=False)
                except Exception:  # noqa: BLE001 - closed meanwhile: nobody to wake
                    pass

    def _run_async(self, call: Callable[..., Any]) -> None:
        """``asyncio.run`` of an async spout, whose task a graceful down cancels (stop).

        Run by hand rather than by ``asyncio.run`` for the end: after a down, the loop
        does not wait for its default executor, whose thread may still block in a read
        the spout awaited through ``asyncio.to_thread`` (the process leaves without it:
        ComponentProcess.run_spout). After a natural end it does, as ``asyncio.run``."""
        import asyncio  # only async spouts pay for it

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()

            def cancel() -> None:
                loop.call_soon_threadsafe(task.cancel)

            self._cancel = cancel
            if self.stopping:  # the down came before the task ran
                self._cancel_task()
            try:
                await call(self.dispatch_async)
            except asyncio.CancelledError:
                if not self._cancelled:
                    raise  # not the down's: the spout's own doing, an error
                # The graceful down: the end of the stream.

        from concurrent.futures import ThreadPoolExecutor  # (asyncio imported it)

        loop = asyncio.new_event_loop()
        # The default executor (asyncio.to_thread), as asyncio's own, but with threads
        # named after this one: threads_left() tells them apart. They are daemons, as
        # this thread is, but an ordinary exit joins them all the same.
        prefix = f"{threading.current_thread().name}{EXECUTOR_SUFFIX}"
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix=prefix))
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(main())
        except asyncio.CancelledError as exc:
            self.error = exc
        finally:
            try:
                # What asyncio.run does on the way out: the spout's other tasks are
                # cancelled (their finally blocks run), async generators closed.
                rest = asyncio.all_tasks(loop)
                for task in rest:
                    task.cancel()
                if rest:
                    loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
                for task in rest:  # one that raised on its way out is logged, as there
                    if not task.cancelled() and task.exception() is not None:
                        loop.call_exception_handler(
                            {
                                "message": "a task of the spout raised at its end",
                                "exception": task.exception(),
                                "task": task,
                            }
                        )
                loop.run_until_complete(loop.shutdown_asyncgens())
                if not self.stopping:
                    loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                self._cancel = None
                asyncio.set_event_loop(None)
                loop.close()  # (the executor, if any, is shut down without waiting)

    @property
    def cancelled(self) -> bool:
        """An async spout's task was cancelled by a graceful down."""
        return self._cancelled

    def _cancel_task(self) -> None:
        """Cancel an async spout's task, once (a second cancel would interrupt its
        cleanup); a no-op for a sync spout, or before the task runs (it then cancels
        itself as it starts)."""
        with self._cancel_lock:
            cancel = self._cancel
            if cancel is None or self._cancelled:
                return
            self._cancelled = True
            try:
                cancel()
            except RuntimeError:  # its loop closed meanwhile: the task is over
                pass

    # -- the I/O loop ----------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Everything queued was taken, and the spout function returned (or raised), or
        it has not called ``dispatch`` for ``STOP_GRACE`` since a graceful down
        (:attr:`abandoned`)."""
        return not self._queue and (self._done.is_set() or self.abandoned)

    @property
    def abandoned(self) -> bool:
        """A graceful down came ``STOP_GRACE`` ago and the spout's thread, still in its
        own code, has not called ``dispatch`` since (which would have ended it): it waits
        for its source. Its stream ends without it; the thread ends with the process."""
        return (
            self.stopping
            and not self._done.is_set()
            and not self._refused
            and time.monotonic() >= self._stop_at
        )

    def stop_deadline(self) -> float | None:
        """When the loop must look at :attr:`done` again although nothing arrives (the
        grace after a graceful down); None when no down is under way."""
        if not self.stopping or self._refused or self._done.is_set():
            return None
        return self._stop_at

    def grace_left(self) -> float:
        """Seconds left of the grace after a graceful down (0 when none is under way)."""
        return max(0.0, self._stop_at - time.monotonic()) if self.stopping else 0.0

    def take(self, limit: int, *, shrink: bool = True) -> Columns:
        """Up to ``limit`` queued messages, oldest first, as their ids and values.

        What leaves the queue is still pending downstream, so the room shrinks by it
        first: ``dispatch`` never sees the old limit with a shorter queue. The loop gives
        the room back with :meth:`set_limit` once it sent them. ``shrink`` False: the
        caller is the pump, in the spout's own thread, which dispatches nothing before
        the pump is done; the room it leaves is the credit's, as it was."""
        queue = self._queue
        n = min(len(queue), limit)
        if shrink:
            self.limit = max(0, self.limit - n)
        # popleft n times in C (map over a repeat): a Python loop here cost the I/O
        # thread about as much per message as pickling it. Pops, not a copy and a
        # clear: the spout thread may append meanwhile.
        seqs = list(map(deque.popleft, repeat(self._seqs, n)))
        values = list(map(deque.popleft, repeat(queue, n)))
        if self._wants_taken:
            self._taken.set()
        return seqs, values

    def set_pump(self, pump: Callable[[], bool] | None) -> None:
        """What ``dispatch`` calls, holding :attr:`lock`, to send a message that comes
        alone from the spout's own thread (None: always hand over to the I/O loop). It
        returns True when it left messages waiting (for credit): a sleeping I/O loop is
        then woken to wait for them."""
        self._pump = pump
        self._flood = pump is None

    def set_limit(self, limit: int) -> None:
        """The room the loop gives the spout now (credit, ``max_pending``)."""
        if limit != self.limit:
            self.limit = limit
            if self._wants_room:
                self._wants_room = False
                self._room.set()

    def idle(self) -> bool:
        """The loop is about to sleep: True if it may (nothing queued, spout running, no
        pump left work since its last turn)."""
        self._io_idle = True  # written before reading what dispatch writes (and v.v.)
        if self._queue or self._done.is_set() or self._left:
            self._left = False
            self._io_idle = False
            return False
        return True

    def awake(self) -> None:
        self._io_idle = False

    def skip(self) -> None:
        """The stream ends before the spout's function is called (its process started
        after a graceful down came): nothing for the I/O loop to wait for."""
        self.stop()
        self._done.set()

    def stop(self) -> None:
        """A graceful down: the next dispatch raises SpoutStopped, an async spout's task is
        cancelled; a spout that neither comes back to ``dispatch`` nor ends within
        ``STOP_GRACE`` has its stream ended without it."""
        if not self.stopping:
            self._stop_at = time.monotonic() + self._grace
        self.stopping = True  # (written before _cancel_task reads _cancel: see main)
        self._room.set()
        self._cancel_task()

"""at-least-once glue between the pure ledgers and one process's sockets and files.

Under ``settings.guarantee: at-least-once`` every process gets one of these; under
at-most-once none exists and the process loop skips every hook (``None`` checks only).

* :class:`Anchoring` sits in the outbox: it remembers which roots (spout batches) the
  queued messages came from and gives every frame it sends an *anchor* — a new edge id
  and those roots (``protocol.pack_anchor``) — reporting the edge as born.
* :class:`WorkerAcks` is a worker's side: the :class:`~.ledger.AckTracker` of the frames
  it received, the acks its own receivers send back (merged into its own XORs), and the
  way back: acks for a spout instance go to the instance that last sent us a frame of
  that spout's batches, on the data connection that frame came in on (ROUTER →
  DEALER, like a credit grant), so they are covered by the same security as the data
  (ipc in a 0700 directory, or CURVE) and checked on arrival like every frame. A
  sequential worker's acks also wait until the ids are durable: its cursor saved in the
  run directory (runtime/cursor.py), or below ``committed()``.
* :class:`SpoutAcks` is a spout's side: the :class:`~.pending.PendingWindow` (values
  kept until done, replay on ``message_timeout`` or a restart notice), the user's
  ``ack``/``fail`` hooks and the resume point a restarted spout reads.

A restarted worker tells each sender, on the first frame it gets from it, that it
restarted (``protocol.restart_frame``); workers pass the notice upstream, and a spout
that gets it replays everything pending at once instead of waiting for the timeout.
"""

from __future__ import annotations

import logging
import operator
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..protocol import (
    Acks,
    Anchor,
    Batch,
    ProcessSpec,
    RestartNotice,
    TopologySpec,
    acks_frame,
    pack_anchor,
    restart_frame,
)
from .cursor import MIN_INTERVAL, SavedCursor
from .ledger import ROOT_BITS, AckTracker, FrameToken, new_edge_id
from .pending import PendingWindow

__all__ = [
    "DEFAULT_MAX_PENDING",
    "Anchoring",
    "SpoutAcks",
    "WorkerAcks",
    "load_resume",
    "spout_slots",
    "state_path",
]

log = logging.getLogger("clusterduck.runtime")

#: at-least-once without ``max_pending``: messages a spout keeps at most.
DEFAULT_MAX_PENDING = 20_000
#: A worker sends its acks at most this often (each ack frame costs both ends a send, a
#: poll wake-up and a receive; per slice, they cost a fast sink ~10 % of its time).
ACK_INTERVAL = 0.005
#: Restart notices remembered (by pid) so that one restart replays once.
_SEEN_RESTARTS = 64
#: (root, xor) pairs per ack frame.
_ACK_CHUNK = 4096

Route = tuple[Any, bytes]  # (inbox socket, sender identity)
_first = operator.itemgetter(0)


def spout_slots(topology: TopologySpec) -> list[str]:
    """Every spout instance, in slot order (the slot is part of each root id)."""
    return [n for s in topology.spouts for n in s.instance_names()]


def state_path(spec: ProcessSpec, kind: str) -> Path | None:
    """Where this instance keeps ``kind`` (``cursor``, ``resume``) across restarts."""
    if not spec.state_dir:
        return None
    return Path(spec.state_dir) / f"{spec.component}.{spec.index}.{kind}"


def load_resume(spec: ProcessSpec) -> int | None:
    """A restarted spout's resume point (every id below it is done), or None."""
    if not (spec.topology.at_least_once and spec.restarted):
        return None
    path = state_path(spec, "resume")
    if path is None:
        return None
    try:  # one line of text, replaced atomically by SpoutAcks.save_resume
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Anchoring:
    """The outbox's at-least-once hook: roots per queued message, an anchor per frame.

    Roots are kept per queue as runs ``[count, roots]`` in queue order: the caller sets
    :attr:`current` before handing a batch to the outbox, so a run is one emitted slice.
    """

    def __init__(
        self, born: Callable[[int, tuple[int, ...]], None], *, count: bool = False
    ) -> None:
        self.born = born
        self.current: tuple[int, ...] = ()
        self._runs: dict[int, deque[list[Any]]] = {}
        # ``count`` (a spout): messages not framed yet per root, so a root is sealed as
        # soon as its own messages are framed, not when the whole outbox is empty.
        self.unframed: dict[int, int] | None = {} if count else None

    def queued(self, queue: object, n: int) -> None:
        runs = self._runs.get(id(queue))
        if runs is None:
            runs = self._runs[id(queue)] = deque()
        current = self.current
        if runs and runs[-1][1] is current:
            runs[-1][0] += n
        else:
            runs.append([n, current])
        unframed = self.unframed
        if unframed is not None:
            for root in current:
                unframed[root] = unframed.get(root, 0) + n

    def anchor(self, queue: object, n: int) -> tuple[Anchor, bytes]:
        """A new edge for the first ``n`` messages of ``queue`` (not yet taken off)."""
        roots: set[int] = set()
        left = n
        for run in self._runs.get(id(queue), ()):
            roots.update(run[1])
            left -= run[0]
            if left <= 0:
                break
        anchor = Anchor(new_edge_id(), tuple(roots))
        return anchor, pack_anchor(anchor.edge, anchor.roots)

    def framed(self, queue: object, n: int, anchor: Anchor | None) -> None:
        """The first ``n`` messages of ``queue`` left it (sent under ``anchor``, or
        dropped: encoding failed, or a peer that takes no anchors)."""
        runs = self._runs.get(id(queue))
        unframed = self.unframed
        while runs and n > 0:
            run = runs[0]
            took = min(n, run[0])
            if unframed is not None:
                for root in run[1]:
                    left = unframed.get(root, 0) - took
                    if left > 0:
                        unframed[root] = left
                    else:
                        unframed.pop(root, None)
            if run[0] > n:
                run[0] -= n
                break
            n -= run[0]
            runs.popleft()
        if anchor is not None and anchor.roots:
            self.born(anchor.edge, anchor.roots)


class WorkerAcks:
    """A worker's at-least-once side (see the module docstring)."""

    def __init__(
        self,
        spec: ProcessSpec,
        inbox_of: dict[str, Any],
        *,
        committed: Callable[[], int | None] | None = None,
    ) -> None:
        topology = spec.topology
        component = topology.component(spec.component)
        self.name = spec.name
        self.pid = os.getpid()
        self.restarted = spec.restarted
        self.tracker = AckTracker(
            holds=component.bundle or component.sequential, gated=component.sequential
        )
        # sequential, not bundled: ids leave in order, tracked per slice (hold_below)
        self.in_order = component.sequential and not component.bundle
        self.anchoring = Anchoring(self.tracker.born)
        self.committed = committed if component.sequential else None
        path = state_path(spec, "cursor") if component.sequential else None
        self.cursor = SavedCursor(path) if path is not None and committed is None else None
        self._via: dict[int, Route] = {}  # spout slot → the way back
        self._senders: dict[bytes, Any] = {}  # identity → inbox socket it writes to
        self._told: set[bytes] = set()  # senders told that we restarted
        self._next_send = 0.0
        # A bundle part still waiting for its partner after this long is given up on
        # (acknowledged): after a restart its partner may never come again (acked before
        # the crash as part of a completed bundle), or a branch filtered it out. Half the
        # timeout, so that it is acked before the spout would replay it once more.
        self.give_up = topology.message_timeout / 2 if component.bundle else None
        self._static = self._static_routes(topology, component.inputs, inbox_of)

    @staticmethod
    def _static_routes(
        topology: TopologySpec, inputs: Iterable[str], inbox_of: dict[str, Any]
    ) -> dict[int, Route]:
        """A way back to each spout instance before any frame came (any instance of an
        input that descends from the spout is connected to us and forwards)."""
        ancestors: dict[str, set[str]] = {}
        for name in topology.topological_order():
            comp = topology.component(name)
            ancestors[name] = set(comp.inputs).union(*(ancestors[i] for i in comp.inputs))
        routes: dict[int, Route] = {}
        for slot, instance in enumerate(spout_slots(topology)):
            spout, _, index = instance.rpartition("/")
            for name in inputs:
                if name == spout:
                    routes[slot] = (inbox_of[name], instance.encode())
                    break
                if spout in ancestors[name]:
                    k = topology.component(name).parallelism
                    routes[slot] = (inbox_of[name], f"{name}/{int(index) % k}".encode())
                    break
        return routes

    # -- frames in -----------------------------------------------------------------

    def receive(self, sock: Any, identity: bytes, anchor: Anchor | None, n: int) -> FrameToken:
        """A data frame of ``n`` messages arrived from ``identity`` on ``sock``."""
        if identity not in self._senders:
            self._senders[identity] = sock
            if self.restarted and identity not in self._told:
                self._told.add(identity)
                sock.send((identity, restart_frame(self.pid)), block=False)
        if anchor is None:  # a sender under at-most-once (not ours): nothing to ack
            return FrameToken(0, (), n)
        via = self._via
        for root in anchor.roots:
            via[root >> ROOT_BITS] = (sock, identity)
        return self.tracker.receive(anchor.edge, anchor.roots, n)

    def heard_from(self, sock: Any, identity: bytes) -> None:
        """A probe or end of stream: a restarted worker still owes the notice."""
        if self.restarted and identity not in self._told:
            self._told.add(identity)
            self._senders.setdefault(identity, sock)
            sock.send((identity, restart_frame(self.pid)), block=False)

    def feed(
        self, logic: Any, emit: Callable[[Batch], None], name: str, part: Batch, token: FrameToken
    ) -> None:
        """One slice into the user's code, its outputs anchored to the slice's roots."""
        tracker = self.tracker
        anchoring = self.anchoring
        if not tracker.holds:
            anchoring.current = token.roots
            emit(logic.feed(name, part))
            anchoring.current = ()
            tracker.processed(token, len(part))
            return
        if self.in_order:
            cursor = logic.sequencer.cursor
            tracker.hold_below(token, max(map(_first, part)), len(part))
            out = logic.feed(name, part)
            if out:
                anchoring.current = tracker.roots_waiting(cursor)
                emit(out)
                anchoring.current = ()
            return
        tracker.hold(token, [seq for seq, _ in part])
        released: list[int] = []
        logic.released = released
        try:
            out = logic.feed(name, part)
        finally:
            logic.released = None
        anchoring.current = tracker.roots_of(released)
        emit(out)
        anchoring.current = ()
        tracker.release(released)
        # Parts that left (duplicates, late parts) are done. So is a part of a bundled
        # sequential worker below its cursor: its bundle can only be dropped as late, and
        # after a restart its partner may never come again (acked before the crash).
        sequencer = logic.sequencer
        below = sequencer.cursor if sequencer is not None else None
        tracker.release(
            [seq for seq, _ in part if not logic.holds(seq) or (below is not None and seq < below)]
        )

    def step(self, logic: Any, emit: Callable[[Batch], None], step: Callable[[], Batch]) -> None:
        """Emit what ``step()`` (timers, end of stream) released, acknowledging it."""
        if self.in_order:
            cursor = logic.sequencer.cursor
            out = step()
            if out:
                self.anchoring.current = self.tracker.roots_waiting(cursor)
                emit(out)
                self.anchoring.current = ()
            return
        released: list[int] = []
        logic.released = released
        try:
            out = step()
        finally:
            logic.released = None
        tracker = self.tracker
        self.anchoring.current = tracker.roots_of(released)
        emit(out)
        self.anchoring.current = ()
        tracker.release(released)

    # -- replies from our receivers ----------------------------------------------------

    def on_reply(self, reply: Acks | RestartNotice) -> None:
        if isinstance(reply, Acks):
            self.tracker.merge(reply.pairs)
            return
        # Someone below restarted: every sender of ours passes it on towards the spouts.
        frame = restart_frame(reply.pid)
        for identity, sock in self._senders.items():
            sock.send((identity, frame), block=False)

    # -- acks out ------------------------------------------------------------------------

    def durable(self, cursor: int, *, force: bool = False) -> None:
        """A sequential worker: let the acks of ids now durable go (committed(), or a
        saved cursor; without a run directory nothing outlives us anyway)."""
        tracker = self.tracker
        if not tracker.gated:
            return
        if self.committed is not None:
            try:
                last = self.committed()
            except Exception:  # noqa: BLE001 - the user's hook: log, ack nothing yet
                log.exception("%s: committed() raised; its acks wait", self.name)
                return
            if last is not None:
                tracker.durable(last + 1)
            return
        if self.cursor is None:
            tracker.durable(cursor)
            return
        if force:
            self.cursor.save(cursor)
        else:
            self.cursor.request(cursor)  # the saver thread writes it (runtime/cursor.py)
        if self.cursor.saved is not None:
            tracker.durable(self.cursor.saved)

    def next_due(self, cursor: int) -> float | None:
        """When to look again whether the saver thread saved the cursor, if it owes one."""
        if self.cursor is None or not self.cursor.pending():
            return None
        return time.monotonic() + MIN_INTERVAL

    def send_due(self) -> float | None:
        """When the XORs gathered are due to be sent (None: nothing owed)."""
        return self._next_send if self.tracker.owes() else None

    def give_up_held(self) -> None:
        """Acknowledge bundle parts held longer than ``give_up`` (they stay in the
        bundler: a late partner still completes the bundle, but its result is then no
        longer covered by a replay)."""
        if self.give_up is not None:
            stale = self.tracker.expire_held(time.monotonic() - self.give_up)
            if stale:
                log.warning(
                    "%s: %d bundle parts waited over %gs for their partner; acknowledged",
                    self.name,
                    len(stale),
                    self.give_up,
                )
                self.tracker.release(stale)

    def send(self, *, force: bool = False) -> None:
        """Send the XORs gathered, each towards its spout instance, at most every
        ACK_INTERVAL. Call only when nothing emitted still waits in the outbox (every
        output edge is born)."""
        if not self.tracker.owes():
            return
        now = time.monotonic()
        if not force and now < self._next_send:
            return
        self._next_send = now + ACK_INTERVAL
        for slot, acks in self.tracker.take().items():
            route = self._via.get(slot) or self._static.get(slot)
            if route is None:
                continue
            sock, identity = route
            items = list(acks.items())
            for start in range(0, len(items), _ACK_CHUNK):
                chunk = dict(items[start : start + _ACK_CHUNK])
                sock.send((identity, acks_frame(chunk)), block=False)

    def resume(self, sequencer: Any) -> None:
        """A restarted sequential worker goes on after committed(), or its saved cursor."""
        if not self.restarted:
            return
        start: int | None = None
        if self.committed is not None:
            try:
                last = self.committed()
            except Exception:  # noqa: BLE001
                log.exception("%s: committed() raised at restart", self.name)
                last = None
            start = None if last is None else last + 1
        elif self.cursor is not None:
            start = self.cursor.load()
        if start is not None and start > sequencer.cursor:
            log.info("%s resumes at seq %d", self.name, start)
            sequencer.cursor = start

    def held(self) -> int:
        return self.tracker.held()


class SpoutAcks:
    """A spout's at-least-once side (see the module docstring)."""

    def __init__(self, spec: ProcessSpec, user: Any) -> None:
        slot = spout_slots(spec.topology).index(spec.name)
        self.name = spec.name
        self.window = PendingWindow(slot, spec.topology.message_timeout)
        self.anchoring = Anchoring(self._born, count=True)
        hook = getattr(user, "ack", None)
        self._ack = hook if callable(hook) else None
        hook = getattr(user, "fail", None)
        self._fail = hook if callable(hook) else None
        self.resume_file = state_path(spec, "resume")
        self.next_seq = 0  # one past the highest id dispatched
        self._restarts: deque[int] = deque(maxlen=_SEEN_RESTARTS)
        self.replay_requested = False

    def _born(self, edge: int, roots: tuple[int, ...]) -> None:
        for root in roots:
            self.window.born(root, edge)

    def open(self, batch: Batch) -> None:
        """``batch`` goes to the outbox next: a root for it, its frames anchored to it."""
        top = max(seq for seq, _ in batch) + 1
        if top > self.next_seq:
            self.next_seq = top
        self.anchoring.current = (self.window.open(batch),)

    def on_reply(self, reply: Acks | RestartNotice) -> None:
        if isinstance(reply, Acks):
            window = self.window
            for root, xor in reply.pairs:
                done = window.ack(root, xor)
                if done:
                    self._hook(self._ack, done)
        elif reply.pid not in self._restarts:
            self._restarts.append(reply.pid)
            self.replay_requested = True

    def seal(self) -> None:
        """Roots whose messages were all framed may complete now."""
        self._hook(self._ack, self.window.seal(self.anchoring.unframed or ()))

    def to_replay(self) -> list[Batch]:
        """Batches to dispatch again now: all after a restart notice, else the expired."""
        restarted = self.replay_requested
        if restarted:
            self.replay_requested = False
            batches = self.window.replay_all()
        else:
            batches = self.window.expired()
        if batches:
            log.warning(
                "%s: replaying %d messages (%s); %d done so far",
                self.name,
                sum(map(len, batches)),
                "a process on the path restarted"
                if restarted
                else "not done within message_timeout",
                self.window.acked,
            )
        for batch in batches:
            self.window.replayed += len(batch)
            self._hook(self._fail, batch)
        return batches

    def next_deadline(self) -> float | None:
        return self.window.next_deadline()

    def save_resume(self) -> None:
        """Write the resume point (cheap, no fsync: it guards against a process crash)."""
        if self.resume_file is None:
            return
        try:
            self.resume_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.resume_file.with_suffix(".tmp")
            tmp.write_text(f"{self.window.done_below(self.next_seq)}\n")
            os.replace(tmp, self.resume_file)
        except OSError as exc:
            log.warning("%s: could not save the resume point: %s", self.name, exc)

    @property
    def pending(self) -> int:
        return self.window.messages

    @property
    def replayed(self) -> int:
        return self.window.replayed

    def _hook(self, hook: Callable[[int], Any] | None, batch: Batch) -> None:
        if hook is None or not batch:
            return
        for seq, _ in batch:
            try:
                hook(seq)
            except Exception:  # noqa: BLE001 - the user's hook must not stop the spout
                log.exception("%s: %s(%d) raised", self.name, hook.__name__, seq)

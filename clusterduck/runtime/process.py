"""The fixed loop every spout and worker process runs: receive → call → route → send.

Started by the host's supervisor with a ``ProcessSpec`` (JSON) on stdin: forked from its
fork server (``forkserver.py``), or as ``python -m clusterduck.runtime.process``. The
start is explicit, in steps the supervisor drives:

1. import the user's code and bind one inbox per input, then say ``hello`` (endpoints);
2. on ``wire`` (every instance's endpoints) connect to each downstream instance and wait
   for every handshake, then say ``ready``;
3. a spout dispatches only after ``start`` — so nothing is sent before every worker of
   the topology listens (the slow joiner).

A worker ends once every instance of every input sent end of stream and its queue is
drained; a spout ends when its function returns. Either calls ``close()``, sends end of
stream downstream and says ``finished``. Counters go to the supervisor every half second.

The seams, for whoever changes the loop: input is read in :meth:`ComponentProcess._read_burst`
(one inbox, a few frames, each worked through in slices so results stream), results are
handed to I/O with ``outbox.emit`` and sent by ``outbox.flush`` as far as downstream
credit allows (runtime/credit.py); how far this worker got goes back to each sender as a
grant (:class:`~.intake.Intake`); which inputs are read is the :class:`~.gate.InputGate`'s
decision; waiting for credit is :meth:`ComponentProcess.wait_room`. A spout's thread is
held back by the :class:`~.spout.SpoutBridge`, whose room follows the credit its outputs
hold and the spout's ``max_pending``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..exceptions import FatalError
from ..protocol import (
    ControlRequest,
    GapStatus,
    Hello,
    InstanceReport,
    Op,
    ProcessSpec,
    State,
    Wiring,
    data_header,
    decode_json,
    eos_header,
    probe_header,
)
from .anomalies import Anomalies
from .codec import get_codec
from .component import UserCode, WorkerLogic, load_user_code, message_failed
from .context import InstanceContext, set_context
from .credit import PROBE_INTERVAL
from .forkserver import die_with_supervisor
from .gate import InputGate
from .guarantee import DEFAULT_MAX_PENDING, SpoutAcks, WorkerAcks, load_resume
from .inbound import ControlGuard, DataBatch, EndOfStream, InboundGuard, Probe, Rejections
from .intake import GRANT_EVERY, SLICE_SECONDS, Intake
from .metrics import Metrics
from .outbox import MAX_BATCH, Outbox, Output
from .routing import Route
from .spout import STOP_GRACE, SWITCH_INTERVAL, SpoutBridge, SpoutStopped, threads_left
from .stall import GapWatch, waiting_for
from .transport import Socket, Transport

__all__ = ["ComponentProcess", "SpoutStopped", "main"]

log = logging.getLogger("clusterduck.runtime")

REPORT_INTERVAL = 0.5
CONNECT_TIMEOUT = 60.0
# A spout may run at most this many messages ahead of what the I/O thread has framed
# (fewer: never more than the credit its outputs hold, see _room_for_spout).
SPOUT_QUEUE = 2 * MAX_BATCH
# Frames read from one inbox before looking at control and timers again.
READ_BURST = 16
# The longest a worker that is behind (the next frame already waits) holds the results
# of small frames (under HOLD_BATCH messages: a trickle that came in a burst) back so
# that they leave in one frame with the next frame's. A frame costs both ends tens of
# microseconds whatever it holds, so frames of this much work need no company; held for
# SLICE_SECONDS (2 ms), they made a hop's p99 at 10k msgs/s 1-1.5 ms longer. Larger
# frames (a flood) are still held up to SLICE_SECONDS: fewer, larger frames downstream.
HOLD_SECONDS = 0.0005
HOLD_BATCH = 64

# The young generation's collection threshold once running (CPython's default is 700).
# A frame of 1,000 small messages allocates a few thousand tuples, so at the default a
# worker ran several collections per frame; with the start-up heap frozen (gc.freeze)
# each collection also stops walking every object the runtime and the user's code
# imported. Cyclic garbage is still collected, just in fewer, larger rounds.
GC_YOUNG_THRESHOLD = 20_000

# What a turn of the spout's I/O loop leaves to do (ComponentProcess._spout_turn).
_TURN_BUSY, _TURN_IDLE, _TURN_DONE = object(), object(), object()

EXIT_FINISHED = 0
EXIT_USER_FAILURE = 3  # user code failed to load, or on_error: stop fired: no restart


class ComponentProcess:
    """One spout or worker instance; the transport is passed in (sockets are its job)."""

    def __init__(self, spec: ProcessSpec, transport: Transport) -> None:
        self.spec = spec
        self.topology = spec.topology
        self.component = self.topology.component(spec.component)
        self.index = spec.index
        self.name = spec.name
        self.is_spout = self.component.is_spout
        self.codec = get_codec(self.topology.serializer)
        self.metrics = Metrics()
        self.anomalies = Anomalies()
        self.state = State.STARTING
        self.transport = transport
        self.control = transport.dealer(spec.supervisor, identity=self.name)
        self.inboxes: dict[Socket, str] = {}
        self.inbox_of: dict[str, Socket] = {}
        # Every frame a peer sends is checked by a guard before it is used; what they
        # drop is counted here, by kind (status: rejected_frames).
        self.rejections = Rejections(self.name)
        self.guards: dict[Socket, InboundGuard] = {}
        self.control_guard = ControlGuard(self.rejections)
        self.outbox: Outbox | None = None
        self.logic: WorkerLogic | None = None
        self.bridge: SpoutBridge | None = None
        self.abandoned = False  # a spout's thread left behind after a graceful down
        self.ended: set[str] = set(spec.ended)
        self.started = spec.start
        self.stopping = spec.stop  # restarted during a graceful down
        self.wiring: Wiring | None = spec.wiring
        self._next_report = 0.0
        # A worker's side of credit: what it grants each sender, and grants it owes
        # while its own output waits (identity: (inbox, processed, total)).
        self.intake: Intake | None = None
        if not self.is_spout:
            senders = sum(self.topology.component(n).parallelism for n in self.component.inputs)
            self.intake = Intake(max(1, senders))
        self._owed: dict[bytes, tuple[Socket, int, int]] = {}
        # Progress a sender has not heard of (its grant was not due yet: Intake), told
        # at _settle_at even if no frame comes to carry it, so that an idle edge shows
        # nothing in flight and a spout's max_pending sees what is done.
        self._unsettled: dict[bytes, tuple[Socket, int, int]] = {}
        self._settle_at = 0.0
        self._threads_before: set[threading.Thread] = set()  # before user code (run)
        # at-least-once (runtime/guarantee.py); both None under at-most-once.
        self.spout_acks: SpoutAcks | None = None
        self.worker_acks: WorkerAcks | None = None
        # on_error: stop raised while the spout's thread sent (_pump_spout)
        self._pump_fatal: FatalError | None = None
        # a bundled or sequential worker held up by an id that does not come
        self.gaps = GapWatch()

    # -- talking to the supervisor ------------------------------------------------

    def say(self, message: Hello | InstanceReport) -> None:
        self.control.send_json(message.to_dict())

    def report(self, op: Op = Op.REPORT) -> None:
        backlog = self.outbox.queued_messages if self.outbox else 0
        if self.logic is not None:
            backlog += self.logic.backlog()
        if self.bridge is not None:
            backlog += len(self.bridge)
        self.say(
            self.metrics.report(
                op,
                pid=os.getpid(),
                state=self.state,
                ended=tuple(sorted(self.ended)),
                backlog=backlog,
                anomalies=self.anomalies.as_dict(),
                in_flight=self.outbox.in_flight() if self.outbox else 0,
                edges=self.outbox.edges() if self.outbox else (),
                cost_ms=self.intake.cost_ms() if self.intake else 0.0,
                rejected_frames=self.rejections.as_dict(),
                gap=self._gap(),
                **self._guarantee_counts(),
            )
        )
        self._next_report = time.monotonic() + REPORT_INTERVAL

    def _gap(self) -> GapStatus | None:
        """A bundled or sequential worker held up by an id that does not come: for
        ``status``, and once per id a WARNING here (runtime/stall.py)."""
        logic = self.logic
        if logic is None or (logic.bundler is None and logic.sequencer is None):
            return None
        # Not while its own output waits for credit: it then reads no input, and the id
        # it waits for may sit unread in its inbox (a slow downstream, not a lost id).
        outbox = self.outbox
        blocked = outbox is not None and outbox.pending
        gap = self.gaps.see(None if blocked else waiting_for(logic.bundler, logic.sequencer))
        if gap is not None and self.gaps.warn_now():
            missing = (
                f"its part from {', '.join(gap.missing)} has not come"
                if gap.missing
                else "it has not come"
            )
            timeout = self.component.gap_timeout
            if self.worker_acks is not None:
                then = "at-least-once replays it after message_timeout"
            elif logic.sequencer is None:
                then = "its bundle is dropped at end of stream"
            elif timeout is None:
                then = "it waits until end of stream (no gap_timeout)"
            else:
                then = f"gap_timeout {timeout:g}s skips it"
            log.warning(
                "has waited %.0f s for id %d (%s: slow upstream, or lost, e.g. by a crash), "
                "backlog %d: %s",
                gap.seconds,
                gap.seq,
                missing,
                logic.backlog(),
                then,
            )
        return gap

    def _guarantee_counts(self) -> dict[str, int]:
        """at-least-once: pending and replayed for status (and the spout's resume point)."""
        if self.spout_acks is not None:
            self.spout_acks.save_resume()
            return {"pending": self.spout_acks.pending, "replayed": self.spout_acks.replayed}
        if self.worker_acks is not None:
            return {"pending": self.worker_acks.held()}
        return {}

    def maybe_report(self) -> None:
        if time.monotonic() >= self._next_report:
            self.report()

    def handle_control(self) -> None:
        """Act on every control message waiting (never blocks)."""
        while (frames := self.control.recv(block=False)) is not None:
            msg = self.control_guard.decode(frames, ControlRequest.from_dict)
            if msg is not None:
                self.control_guard.dispatch(self.on_control, msg)

    def on_control(self, msg: ControlRequest) -> None:
        if msg.op is Op.START:
            self.started = True
        elif msg.op is Op.STOP:
            self.stopping = True
            if self.bridge is not None:
                self.bridge.stop()
            if self.is_spout and self.state is State.RUNNING:
                self.state = State.DRAINING
        elif msg.op is Op.WIRE:
            self.wiring = msg.wiring

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            if deadline is not None and time.monotonic() > deadline:
                return False
            self.transport.poll([self.control], timeout=0.5)
            self.handle_control()
        return True

    # -- start-up ------------------------------------------------------------------

    def start(self) -> UserCode:
        spec = self.spec
        set_context(
            InstanceContext(
                self.topology.name,
                self.component.name,
                self.index,
                self.component.parallelism,
                spec.host,
                resume_from=load_resume(spec),
            )
        )
        code = load_user_code(self.component, Path(spec.code_dir))
        endpoints = {}
        for name in self.component.inputs:
            sock = self.transport.receiver(
                spec.bind_host,
                spec.advertise,
                spec.ports.get(name),
                name=f"{self.component.name}.{self.index}.{name}",
            )
            self.add_inbox(sock, name)
            endpoints[name] = sock.endpoint
        ports = {name: s.port or 0 for s, name in self.inboxes.items()}
        self.say(Hello(os.getpid(), endpoints, ports))
        self.wait_for(lambda: self.wiring is not None)
        assert self.wiring is not None
        self.outbox = self._connect(self.wiring)
        if self.topology.at_least_once:
            self._guarantee(code)
        return code

    def _guarantee(self, code: UserCode) -> None:
        """at-least-once: the spout's pending window, or the worker's ack tracker."""
        outbox = self.outbox
        assert outbox is not None
        if self.is_spout:
            spout = self.spout_acks = SpoutAcks(self.spec, code.call)
            outbox.anchors, outbox.on_reply = spout.anchoring, spout.on_reply
            return
        committed = getattr(code.call, "committed", None)
        worker = self.worker_acks = WorkerAcks(
            self.spec, self.inbox_of, committed=committed if callable(committed) else None
        )
        outbox.anchors, outbox.on_reply = worker.anchoring, worker.on_reply

    def add_inbox(self, sock: Socket, name: str) -> None:
        """Read input ``name`` from ``sock``, through a guard that accepts its instances."""
        self.inboxes[sock] = name
        self.inbox_of[name] = sock
        self.guards[sock] = InboundGuard(
            f"{self.name} <- {name}",
            self.topology.component(name).instance_names(),
            self.codec.decode,
            self.rejections,
        )

    def _connect(self, wiring: Wiring) -> Outbox:
        outputs: list[Output] = []
        me = self.component.name
        labels: dict[Socket, str] = {}
        for worker in self.topology.downstream(me):
            sockets = []
            for i in range(worker.parallelism):
                endpoint = wiring.endpoints[f"{worker.name}/{i}"][me]
                sock = self.transport.sender(endpoint, self.name, f"{worker.name}/{i}")
                labels[sock] = f"{worker.name}/{i} on {worker.host_of(i)} ({sock.endpoint})"
                sockets.append(sock)
            route = Route.for_worker(worker, Path(self.spec.code_dir))
            outputs.append(Output(route, sockets))
        collector = wiring.collector
        if collector and not outputs:
            sock = self.transport.push(collector)
            labels[sock] = f"the test collector ({collector})"
            outputs.append(Output(Route("(collector)", 1, "all"), [sock], credit=False))
        missing = self.transport.wait_connected(labels, CONNECT_TIMEOUT)
        if missing:
            raise ConnectionError(
                "could not reach downstream "
                + ", ".join(labels[s] for s in missing)
                + f" within {CONNECT_TIMEOUT:g}s (a firewall, or a host address that other "
                "hosts cannot reach? set hosts.<name>.address)"
            )
        stop = self.component.on_error == "stop"

        def failed(seq: int, exc: Exception) -> None:
            # Counted as emitted when produced; dropped here, so it never was.
            self.metrics.emitted -= 1
            message_failed(
                self.name, seq, exc, self.metrics, stop=stop, where="routing or encoding: "
            )

        return Outbox(
            outputs,
            self.codec,
            data_header(me, self.index),
            eos_header(me, self.index),
            failed,
            probe_header(me, self.index),
            self.rejections,
        )

    def wait_room(self) -> None:
        """Block until downstream grants credit (or has room), still answering the
        supervisor; wakes up to probe an instance that stays without credit."""
        outbox = self.outbox
        assert outbox is not None
        began = time.monotonic()
        readable, _ = self.transport.poll(
            [self.control, *outbox.grant_sockets()],
            outbox.blocked_sockets(),
            timeout=PROBE_INTERVAL,
        )
        self.metrics.blocked_seconds += time.monotonic() - began
        if self.control in readable:
            self.handle_control()
        outbox.read_grants()
        self.maybe_report()

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        # The runtime's own threads: any other a spout's code started (its class's
        # __init__ included) is one a down waits for (spout.threads_left).
        self._threads_before = set(threading.enumerate())
        try:
            code = self.start()
        except Exception as exc:  # noqa: BLE001 - report any start failure, then exit
            log.exception("%s failed to start", self.name)
            self.say(InstanceReport(Op.FAILED, os.getpid(), error=f"{type(exc).__name__}: {exc}"))
            return EXIT_USER_FAILURE
        self.state = State.RUNNING
        _tune_gc()
        self.report(Op.READY)
        try:
            if self.is_spout:
                self.run_spout(code)
            else:
                self.run_worker(code)
        except FatalError as exc:
            self.state = State.FAILED
            self.report(Op.FATAL)
            log.error("%s", exc)
            return EXIT_USER_FAILURE
        self.finish(code)
        return EXIT_FINISHED

    def finish(self, code: UserCode) -> None:
        self.state = State.DRAINING
        if code.close is not None:
            try:
                code.close()
            except Exception as exc:  # noqa: BLE001
                self.metrics.errors += 1
                self.metrics.last_error = f"close(): {type(exc).__name__}: {exc}"
                log.exception("%s: close() raised", self.name)
        assert self.outbox is not None
        self.outbox.send_eos(self.wait_room)
        self.state = State.FINISHED
        self.report(Op.FINISHED)

    # -- workers ---------------------------------------------------------------------

    def run_worker(self, code: UserCode) -> None:
        logic = self.logic = WorkerLogic(
            self.component, code.call, metrics=self.metrics, anomalies=self.anomalies
        )
        senders = {
            name: set(self.topology.component(name).instance_names())
            for name in self.component.inputs
        }
        open_inputs = {name for name, who in senders.items() if not who <= self.ended}
        gate = InputGate(senders)
        acks = self.worker_acks
        if acks is not None and logic.sequencer is not None:
            acks.resume(logic.sequencer)
        while open_inputs:
            self.worker_step(logic, gate, senders, open_inputs)
        assert self.outbox is not None
        if acks is None:
            self.outbox.emit(logic.finish())
            return
        acks.step(logic, self.outbox.emit, logic.finish)
        while self.outbox.pending and not self.outbox.flush():
            self.wait_room()
        self._send_acks(logic, force=True)

    def _send_acks(self, logic: WorkerLogic, *, force: bool = False) -> None:
        """at-least-once: acks go once everything emitted was framed (edges born); a
        sequential worker's only for ids durable (saved cursor, committed())."""
        acks = self.worker_acks
        if acks is None or (self.outbox is not None and self.outbox.pending):
            return
        acks.give_up_held()
        if logic.sequencer is not None:
            acks.durable(logic.sequencer.cursor, force=force)
        acks.send(force=force)

    def worker_step(
        self,
        logic: WorkerLogic,
        gate: InputGate,
        senders: dict[str, set[str]],
        open_inputs: set[str],
    ) -> None:
        """One turn of the worker loop: send what waits, fire timers, or read input."""
        outbox = self.outbox
        assert outbox is not None
        self.maybe_report()
        # Grants are read when the wait below says they came (or credit is short now).
        if outbox.pending:
            outbox.read_grants()
            if not outbox.flush():
                self.wait_room()
                return
        self._pay_owed()
        acks = self.worker_acks
        deadline = logic.next_deadline()
        if acks is not None:
            self._send_acks(logic)
            due = acks.send_due()
            if logic.sequencer is not None:
                saving = acks.next_due(logic.sequencer.cursor)
                due = saving if due is None else due if saving is None else min(due, saving)
            if due is not None:
                deadline = due if deadline is None else min(due, deadline)
        now = time.monotonic()
        wake = deadline  # when to look again although nothing arrives
        if self._unsettled:
            if now >= self._settle_at:
                self._settle(now)
                return
            wake = self._settle_at if deadline is None else min(deadline, self._settle_at)
        if deadline is not None and now >= deadline:
            if acks is None:
                outbox.emit(logic.poll_timers())
            else:
                acks.step(logic, outbox.emit, logic.poll_timers)
            return
        reading = gate.plan(open_inputs, logic.should_pause)
        timeout = self._next_report - now
        if wake is not None:
            timeout = min(timeout, wake - now)
        inbox_of = self.inbox_of
        # transport.wait, not poll: every socket given is read here until empty (or left
        # dirty), which saves most of zmq_poll's system calls per wake-up.
        ready = self.transport.wait(
            [self.control, *(inbox_of[n] for n in reading), *outbox.grant_sockets()],
            timeout=max(0.0, timeout),
        )
        heard: set[str] = set()
        inboxes = self.inboxes
        for sock in ready:  # control and grants first: a burst then sends on fresh credit
            if sock is self.control:
                self.handle_control()
            elif sock not in inboxes:
                outbox.read_grants(sock)
        for sock in ready:
            if sock in inboxes and not outbox.pending:  # not while output waits
                heard.add(inboxes[sock])
                self._read_burst(sock, logic, outbox, senders, open_inputs)
        gate.heard(heard)

    def _read_burst(
        self,
        sock: Socket,
        logic: WorkerLogic,
        outbox: Outbox,
        senders: dict[str, set[str]],
        open_inputs: set[str],
    ) -> None:
        """Up to READ_BURST frames from one inbox, stopping when output backs up. When
        more frames wait, their results are framed together (fewer, larger frames).

        A frame is worked through in slices (runtime/intake.py): what each slice produced
        goes to the outbox at once, and its sender learns how far we got (credit). Every
        frame is checked by the inbox's guard first: what it rejects is counted and
        dropped, so no frame a peer sends can end this process or its stream."""
        name = self.inboxes[sock]
        guard = self.guards[sock]
        intake = self.intake
        assert intake is not None
        acks = self.worker_acks
        flushed, held = time.perf_counter(), False
        # Whether a message waits, when known: the first read follows a wait that said
        # so (transport.wait), later ones what has_input found below.
        more: bool | None = True
        for _ in range(READ_BURST):
            if more is False:
                break
            frames = sock.recv(block=False, check=more is None)
            more = None
            if frames is None:
                break
            identity = bytes(frames[0])  # the ROUTER's: who to grant
            received = time.perf_counter()
            item = guard.check(identity, frames[1:], sock.peer)
            if item is None:
                continue
            if acks is not None and not isinstance(item, DataBatch):
                acks.heard_from(sock, identity)
            if isinstance(item, EndOfStream):
                self.ended.add(item.sender)
                if senders[name] <= self.ended:
                    open_inputs.discard(name)
                self.report()
                continue
            if isinstance(item, Probe):  # or a data frame the guard dropped
                self._grant(sock, identity, item.total, item.total, 0, 0.0)
                continue
            assert isinstance(item, DataBatch)
            seqs, values, total = item.seqs, item.values, item.total
            n = len(values)
            first = total - n
            token = None if acks is None else acks.receive(sock, identity, item.anchor, n)
            if held or not outbox.pending:  # credit before the work, if the sender runs low
                early = intake.early_grant(identity, first, total, time.monotonic())
                if early is not None:
                    sock.send((identity, early), block=False)
            # The first slice's time counts decoding the frame: a consumer of large values
            # spends its time there, and measured without it would look free and be
            # granted far more bytes than it can take. Unmeasured, the first slice is one
            # message (Intake.slices): then each slice is charged its share of decoding,
            # or a restarted worker's first large frame would make one message look as
            # dear as decoding thousands.
            began, share = received, 0.0
            if n > 1 and intake.grantor.cost is None:
                decoded = time.perf_counter()
                share = (decoded - received) / n
                began = decoded - share
            for start, end in intake.slices(n):
                if start:
                    began = time.perf_counter() - share * (end - start)
                if end - start == n:
                    ids, part = seqs, values
                else:
                    ids, part = seqs[start:end], values[start:end]
                if token is None:
                    outbox.emit_columns(*logic.feed_columns(name, ids, part))
                else:
                    assert acks is not None
                    pairs = list(zip(ids, part, strict=True))
                    acks.feed(logic, outbox.emit, name, pairs, token)
                # With the next frame already waiting (we are behind), its results may
                # leave with these in one frame, unless these fill a frame already or
                # waited long enough (HOLD_SECONDS). Held is not blocked: credit still
                # goes back.
                held = False
                if end == n and outbox.queued_messages < MAX_BATCH:
                    more = sock.has_input()
                    hold = HOLD_SECONDS if n < HOLD_BATCH else SLICE_SECONDS
                    held = more and began - flushed < hold
                if not held:
                    outbox.flush()
                    flushed = began
                if acks is not None:
                    self._send_acks(logic)
                self._grant(
                    sock,
                    identity,
                    first + end,
                    total,
                    end - start,
                    time.perf_counter() - began,
                    held=held,
                )
                self.maybe_report()
            if outbox.pending and not held:
                return
        if held:
            outbox.flush()

    def _grant(
        self,
        sock: Socket,
        identity: bytes,
        processed: int,
        total: int,
        messages: int,
        seconds: float,
        held: bool = False,
    ) -> None:
        """Tell a sender how far we got; new credit only while our own output flows
        (otherwise it is owed, paid by _pay_owed), so a blocked worker stops its inputs.
        ``held``: our output waits for the next frame's company, not for credit."""
        intake = self.intake
        assert intake is not None
        intake.grantor.record(messages, seconds)
        if not held and self.outbox is not None and self.outbox.pending:
            self._owed[identity] = (sock, processed, total)
            return
        self._owed.pop(identity, None)
        now = time.monotonic()
        grant = intake.grant_frame(identity, processed, total, now, force=messages == 0)
        if grant is not None:
            sock.send((identity, grant), block=False)
            if self._unsettled:
                self._unsettled.pop(identity, None)
        else:
            if not self._unsettled:
                self._settle_at = now + GRANT_EVERY
            self._unsettled[identity] = (sock, processed, total)

    def _settle(self, now: float) -> None:
        """Tell every sender the progress it has not heard of (see ``_unsettled``)."""
        intake = self.intake
        assert intake is not None
        for identity, (sock, processed, total) in self._unsettled.items():
            grant = intake.grant_frame(identity, processed, total, now, force=True)
            if grant is not None:
                sock.send((identity, grant), block=False)
        self._unsettled.clear()

    def _pay_owed(self) -> None:
        """The grants held back while our output waited, now that it flows again."""
        if self._owed and self.intake is not None:
            now = time.monotonic()
            for identity, (sock, processed, total) in self._owed.items():
                grant = self.intake.grant_frame(identity, processed, total, now, force=True)
                if grant is not None:
                    sock.send((identity, grant), block=False)
                self._unsettled.pop(identity, None)
            self._owed.clear()

    # -- spouts ----------------------------------------------------------------------

    def run_spout(self, code: UserCode) -> None:
        self.wait_for(lambda: self.started or self.stopping)
        # Two threads share the GIL from here on: hand it over sooner (SWITCH_INTERVAL).
        sys.setswitchinterval(SWITCH_INTERVAL)
        wake_recv, wake_send = self.transport.pair_signal(f"wake-{os.getpid()}")
        bridge = self.bridge = SpoutBridge(self._room_for_spout(), wake_send)
        # Started (or restarted after a crash) once a graceful down came: the stream is
        # over before it began. The user's function is not called: it would open its
        # source again only to have its first dispatch refused.
        skipped = self.stopping
        if skipped:
            bridge.skip()
        thread = threading.Thread(
            target=bridge.run, args=(code.call, code.is_async), name=f"spout-{self.name}"
        )
        thread.daemon = True
        outbox = self.outbox
        assert outbox is not None
        acks = self.spout_acks
        # A message that comes alone is sent by the spout's thread itself (SpoutBridge's
        # pump), so this loop then watches the data sockets through their FDs only
        # (transport.poll_signals): never touching them while that thread may.
        inline = acks is None and all(out.credit for out in outbox.outputs)
        signalling = outbox.grant_sockets()
        for sock in signalling:
            sock.signal_fd()  # read here, before the spout thread may use the socket
        if inline:
            bridge.set_pump(self._pump_spout)
        before = self._threads_before
        if not skipped:
            thread.start()
        while True:
            with bridge.lock:
                if self._pump_fatal is not None:
                    raise self._pump_fatal
                turn = self._spout_turn(bridge, acks)
            if turn is _TURN_DONE:
                break
            if turn is _TURN_BUSY or not bridge.idle():
                continue
            timeout = self._next_report - time.monotonic()
            if acks is not None and (due := acks.next_deadline()) is not None:
                timeout = min(timeout, due - time.monotonic())
            if (due := bridge.stop_deadline()) is not None:
                timeout = min(timeout, due - time.monotonic())
            if inline:
                readable = self.transport.poll_signals(
                    [self.control, wake_recv], signalling, timeout=max(0.0, timeout)
                )
            else:
                readable, _ = self.transport.poll(
                    [self.control, wake_recv, *signalling], timeout=max(0.0, timeout)
                )
            bridge.awake()
            if wake_recv in readable:
                while wake_recv.recv(block=False) is not None:
                    pass
            if self.control in readable:
                with bridge.lock:
                    self.handle_control()
        if bridge.abandoned:
            # Waiting for its source (a sleep, a blocking read) since the down: nothing it
            # could still dispatch would be taken. close() runs all the same (a class
            # spout may close its source there); the thread ends with the process, which
            # leaves without waiting for it (main).
            bridge.closed = self.abandoned = True
            log.warning(
                "spout %s %s within %g s of the graceful down: its stream ends without it",
                self.name,
                # An async spout was cancelled: its finally blocks still run (or it
                # swallowed the CancelledError and awaits on).
                "did not end after it was cancelled"
                if bridge.cancelled
                else "did not call dispatch",
                STOP_GRACE,
            )
        elif not skipped:
            thread.join()
            # Threads the spout started that still run after a down: the executor's of
            # an async spout cancelled while it awaited asyncio.to_thread (that read goes
            # on), or its own. They get what is left of the grace; an ordinary exit would
            # wait for them without end (the interpreter joins executors' threads), so
            # the process leaves without them, as for an abandoned spout (main).
            left = threads_left(before, thread) if self.stopping else []
            for other in left:
                other.join(timeout=bridge.grace_left())
            left = [t for t in left if t.is_alive()]
            if left:
                self.abandoned = True
                log.warning(
                    "spout %s left %d thread(s) running after the graceful down (%s): "
                    "the process leaves without waiting for them",
                    self.name,
                    len(left),
                    ", ".join(t.name for t in left),
                )
        if bridge.error is not None:
            exc = bridge.error
            self.metrics.errors += 1
            self.metrics.last_error = f"{type(exc).__name__}: {exc}"
            log.error("spout %s raised; its stream ends here", self.name, exc_info=exc)
            if self.component.on_error == "stop":
                raise FatalError(
                    self.name, f"spout {self.name} raised: {exc!r} (on_error: stop)"
                ) from exc

    def _spout_turn(self, bridge: SpoutBridge, acks: SpoutAcks | None) -> object:
        """One turn of the spout's I/O loop (holding ``bridge.lock``): send what waits,
        frame what the spout queued. _TURN_BUSY: go again; _TURN_IDLE: nothing to do
        until something arrives; _TURN_DONE: the spout's stream is over."""
        outbox = self.outbox
        assert outbox is not None
        self.maybe_report()
        outbox.read_grants()
        if acks is not None:
            self._replay(acks)
        bridge.set_limit(self._room_for_spout())
        if outbox.pending and not outbox.flush():
            self.wait_room()
            return _TURN_BUSY
        if len(bridge):
            seqs, values = bridge.take(MAX_BATCH)
            self.metrics.emitted += len(values)
            if acks is not None:
                batch = list(zip(seqs, values, strict=True))
                acks.open(batch)
                outbox.emit(batch)
            else:
                outbox.emit_columns(seqs, values)
            outbox.flush()
            bridge.set_limit(self._room_for_spout())
            return _TURN_BUSY
        if bridge.done:
            if acks is None or not len(acks.window):
                return _TURN_DONE
            # at-least-once: the stream ends once nothing it sent is pending.
            self.wait_room()
            return _TURN_BUSY
        if bridge.limit == 0:  # held by max_pending: make sure news will come
            outbox.ask_progress(time.monotonic())
        # Read the grant sockets empty before sleeping: their FDs are edges (sending may
        # have consumed the one a grant raised).
        return _TURN_BUSY if outbox.read_grants() else _TURN_IDLE

    def _pump_spout(self) -> bool:
        """Frame and send what the spout queued, from the spout's own thread (holding
        ``bridge.lock``; see runtime/spout.py); read the grant sockets empty after.
        True: messages are left waiting for credit, or ``max_pending`` holds the spout
        (the I/O loop must see to them: wait for grants, ask for progress)."""
        outbox, bridge = self.outbox, self.bridge
        assert outbox is not None and bridge is not None
        try:
            # Grants are read after sending (below), not before, and only when due: each
            # read of a socket is two system calls in libzmq, and what we know of the
            # credit is recent. A grant left unread meanwhile is read by a later pump
            # (due at the latest when credit runs under half a window) or by the I/O
            # loop, which a pump that leaves messages waiting wakes (runtime/spout.py).
            if not outbox.pending or outbox.flush():
                # (no shrink: this thread dispatches nothing until the pump returns)
                seqs, values = bridge.take(MAX_BATCH, shrink=False)
                self.metrics.emitted += len(values)
                outbox.emit_columns(seqs, values)
                outbox.flush()
            if outbox.grants_due(time.monotonic()):
                while outbox.read_grants():
                    if outbox.pending:
                        outbox.flush()
                bridge.set_limit(self._room_for_spout())
            elif self.component.max_pending is not None:
                bridge.set_limit(self._room_for_spout())  # what was sent counts
            return outbox.pending or bridge.limit == 0
        except FatalError as exc:
            # on_error: stop, for a message that could not be routed or encoded: the
            # I/O loop ends the process with it, as if it had sent the message itself
            # (raised here, the user's spout could catch it).
            self._pump_fatal = exc
            bridge.set_pump(None)
            return True  # wake the I/O loop: it ends the process

    def _replay(self, acks: SpoutAcks) -> None:
        """at-least-once: complete what was framed, dispatch again what must be."""
        outbox = self.outbox
        assert outbox is not None
        acks.seal()
        for batch in acks.to_replay():
            acks.open(batch)
            outbox.emit(batch)

    def _room_for_spout(self) -> int:
        """How far the spout may run ahead of the I/O loop: no more than the credit its
        outputs hold, so that a graceful down drains within about one credit window, and
        no more than ``max_pending`` leaves unused (0: dispatch waits)."""
        assert self.outbox is not None
        room = max(1, min(SPOUT_QUEUE, self.outbox.window()))
        cap = self.component.max_pending
        if self.spout_acks is not None:
            # at-least-once: the values are kept until done; max_pending bounds them.
            kept = self.spout_acks.pending
            return min(room, max(0, (cap or DEFAULT_MAX_PENDING) - kept))
        if cap is not None:
            room = min(room, max(0, cap - self.outbox.unprocessed()))
        return room


def _tune_gc() -> None:
    """Keep the cyclic collector off the hot path: everything loaded so far (runtime,
    user code) is long-lived, and messages are many small short-lived tuples. (No
    collection first: start-up time is paid on every start and restart.)"""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _setup_logging(name: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [{name}] %(message)s",
    )


def main() -> int:
    die_with_supervisor()  # an unsupervised process would run on unseen (forkserver.py)
    spec = ProcessSpec.from_dict(decode_json(sys.stdin.read()))
    _setup_logging(spec.name)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.chdir(spec.code_dir)
    transport = Transport(spec.curve, ipc_dir=spec.ipc_dir, me=spec.name)
    proc = ComponentProcess(spec, transport)
    code = proc.run()
    transport.close()
    if proc.abandoned:
        # The spout's thread still runs user code: an ordinary exit waits for it (the
        # interpreter joins the threads of asyncio.to_thread and executors) and the
        # supervisor for the process, past down's patience. Leave now, flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

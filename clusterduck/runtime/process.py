"""The fixed loop every spout and worker process runs: receive → call → route → send.

Started by the host's supervisor as ``python -m clusterduck.runtime.process`` with a JSON
spec on stdin. The start is explicit, in steps the supervisor drives:

1. import the user's code and bind one inbox per input, then say ``hello`` (endpoints);
2. on ``wire`` (every instance's endpoints) connect to each downstream instance and wait
   for every handshake, then say ``ready``;
3. a spout dispatches only after ``start`` — so nothing is sent before every worker of
   the topology listens (the slow joiner).

A worker ends once every instance of every input sent end of stream and its queue is
drained; a spout ends when its function returns. Either calls ``close()``, sends end of
stream downstream and says ``finished``. Counters go to the supervisor every half second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..topology import Spout, Topology, Worker
from .anomalies import Anomalies
from .codec import get_codec
from .component import FatalError, UserCode, WorkerLogic, load_user_code, message_failed
from .context import InstanceContext, set_context
from .metrics import Metrics
from .outbox import MAX_BATCH, Outbox, Output, data_header, eos_header
from .routing import Route
from .transport import CurveKeys, Socket, Transport, poll

__all__ = ["ComponentProcess", "SpoutStopped", "main"]

log = logging.getLogger("clusterduck.runtime")

REPORT_INTERVAL = 0.5
CONNECT_TIMEOUT = 60.0
# A spout may run this many messages ahead of what the I/O thread has framed.
SPOUT_QUEUE = 2 * MAX_BATCH
# Frames read from one inbox before looking at control and timers again.
READ_BURST = 16
# How long a bundled worker keeps an input that runs ahead paused while its other inputs
# deliver nothing, before it reads on (memory then stays bounded by bundle eviction).
PAUSE_GRACE = 2.0

EXIT_FINISHED = 0
EXIT_USER_FAILURE = 3  # user code failed to load, or on_error: stop fired: no restart


class SpoutStopped(BaseException):
    """Raised inside ``dispatch`` on a graceful ``down``: the spout's stream ends here.

    A BaseException, so that a spout's own ``except Exception`` does not swallow it."""


class ComponentProcess:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.topology = Topology.model_validate(spec["topology"])
        self.component = self.topology.component(spec["component"])
        self.index: int = spec["index"]
        self.name = f"{self.component.name}/{self.index}"
        self.is_spout = isinstance(self.component, Spout)
        self.codec = get_codec(self.topology.settings.serializer)
        self.metrics = Metrics()
        self.anomalies = Anomalies()
        self.state = "starting"
        self.transport = Transport(CurveKeys.from_dict(spec.get("curve")))
        self.control = self.transport.dealer(spec["supervisor"], identity=self.name)
        self.inboxes: dict[Socket, str] = {}
        self.outbox: Outbox | None = None
        self.logic: WorkerLogic | None = None
        self.ended: set[str] = set(spec.get("ended") or [])
        self.started = bool(spec.get("start"))
        self.stopping = bool(spec.get("stop"))  # restarted during a graceful down
        self._next_report = 0.0
        # A spout's hand-off from its thread to the I/O loop (empty for workers).
        self._queue: deque[tuple[int, Any]] = deque()

    # -- talking to the supervisor ------------------------------------------------

    def say(self, op: str, **fields: Any) -> None:
        self.control.send_json({"op": op, "pid": os.getpid(), **fields})

    def report(self, op: str = "report") -> None:
        backlog = self.outbox.queued_messages if self.outbox else 0
        if self.logic is not None:
            backlog += self.logic.backlog()
        backlog += len(self._queue)
        self.say(
            op,
            state=self.state,
            ended=sorted(self.ended),
            **self.metrics.snapshot(backlog=backlog, anomalies=self.anomalies.as_dict()),
        )
        self._next_report = time.monotonic() + REPORT_INTERVAL

    def maybe_report(self) -> None:
        if time.monotonic() >= self._next_report:
            self.report()

    def handle_control(self) -> None:
        """Act on every control message waiting (never blocks)."""
        while (frames := self.control.recv(block=False)) is not None:
            msg = json.loads(frames[-1])
            op = msg.get("op")
            if op == "start":
                self.started = True
            elif op == "stop":
                self.stopping = True
                if self.is_spout and self.state == "running":
                    self.state = "draining"
            elif op == "wire":
                self._wiring = msg

    def wait_for(self, predicate: Any, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            if deadline is not None and time.monotonic() > deadline:
                return False
            poll([self.control], timeout=0.5)
            self.handle_control()
        return True

    # -- start-up ------------------------------------------------------------------

    def start(self) -> UserCode:
        set_context(
            InstanceContext(
                self.topology.name,
                self.component.name,
                self.index,
                self.component.parallelism,
                self.spec.get("host", "localhost"),
            )
        )
        code = load_user_code(self.component, Path(self.spec["code_dir"]))
        ports = self.spec.get("ports") or {}
        endpoints = {}
        if isinstance(self.component, Worker):
            for name in self.component.inputs:
                sock = self.transport.pull(
                    self.spec["bind_host"], self.spec["advertise"], ports.get(name)
                )
                self.inboxes[sock] = name
                endpoints[name] = sock.endpoint
        self.say(
            "hello",
            endpoints=endpoints,
            ports={name: s.port for s, name in self.inboxes.items()},
        )
        self._wiring: dict[str, Any] | None = self.spec.get("wiring")
        self.wait_for(lambda: self._wiring is not None)
        assert self._wiring is not None
        self.outbox = self._connect(self._wiring)
        return code

    def _connect(self, wiring: dict[str, Any]) -> Outbox:
        endpoints: dict[str, dict[str, str]] = wiring["endpoints"]
        outputs: list[Output] = []
        me = self.component.name
        labels: dict[Socket, str] = {}
        for worker in self.topology.downstream(me):
            sockets = []
            for i in range(worker.parallelism):
                sock = self.transport.push(endpoints[f"{worker.name}/{i}"][me])
                labels[sock] = f"{worker.name}/{i} on {worker.host_of(i)} ({sock.endpoint})"
                sockets.append(sock)
            route = Route.for_worker(worker, Path(self.spec["code_dir"]))
            outputs.append(Output(route, sockets))
        collector = wiring.get("collector")
        if collector and not outputs:
            sock = self.transport.push(collector)
            labels[sock] = f"the test collector ({collector})"
            outputs.append(Output(Route("(collector)", 1, "all"), [sock]))
        missing = self.transport.wait_connected(labels, CONNECT_TIMEOUT)
        if missing:
            raise ConnectionError(
                "could not reach downstream "
                + ", ".join(labels[s] for s in missing)
                + f" within {CONNECT_TIMEOUT:g}s (a firewall, or a host address that other "
                "hosts cannot reach? set hosts.<name>.address)"
            )
        stop = (
            self.topology.on_error_of(self.component)
            if isinstance(self.component, Worker)
            else self.topology.settings.on_error
        )

        def failed(seq: int, exc: Exception) -> None:
            message_failed(
                self.name,
                seq,
                exc,
                self.metrics,
                stop=stop == "stop",
                where="routing or encoding: ",
            )

        return Outbox(
            outputs, self.codec, data_header(me, self.index), eos_header(me, self.index), failed
        )

    def wait_room(self, sockets: list[Socket]) -> None:
        """Block on a full downstream, still answering the supervisor."""
        began = time.monotonic()
        readable, _ = poll([self.control], sockets, timeout=REPORT_INTERVAL)
        self.metrics.blocked_seconds += time.monotonic() - began
        if self.control in readable:
            self.handle_control()
        self.maybe_report()

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        try:
            code = self.start()
        except Exception as exc:  # noqa: BLE001 - report any start failure, then exit
            log.exception("%s failed to start", self.name)
            self.say("failed", error=f"{type(exc).__name__}: {exc}")
            return EXIT_USER_FAILURE
        self.state = "running"
        self.report("ready")
        try:
            if self.is_spout:
                self.run_spout(code)
            else:
                self.run_worker(code)
        except FatalError as exc:
            self.state = "failed"
            self.report("fatal")
            log.error("%s", exc)
            return EXIT_USER_FAILURE
        self.finish(code)
        return EXIT_FINISHED

    def finish(self, code: UserCode) -> None:
        self.state = "draining"
        if code.close is not None:
            try:
                code.close()
            except Exception as exc:  # noqa: BLE001
                self.metrics.errors += 1
                self.metrics.last_error = f"close(): {type(exc).__name__}: {exc}"
                log.exception("%s: close() raised", self.name)
        assert self.outbox is not None
        self.outbox.send_eos(self.wait_room)
        self.state = "finished"
        self.report("finished")

    def run_worker(self, code: UserCode) -> None:
        assert isinstance(self.component, Worker)
        logic = self.logic = WorkerLogic(
            self.component,
            self.topology,
            code.call,
            metrics=self.metrics,
            anomalies=self.anomalies,
        )
        outbox = self.outbox
        assert outbox is not None
        senders = {
            name: {f"{name}/{i}" for i in range(self.topology.component(name).parallelism)}
            for name in self.component.inputs
        }
        open_inputs = {name for name, who in senders.items() if not who <= self.ended}
        inbox_of = {name: sock for sock, name in self.inboxes.items()}
        starved_since: float | None = None
        starving = False
        while open_inputs:
            self.maybe_report()
            if outbox.pending and not outbox.flush():
                self.wait_room(outbox.blocked_sockets())
                continue
            deadline = logic.next_deadline()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                outbox.emit(logic.poll_timers())
                continue
            # A bundled worker stops reading an input that runs ahead so that the lagging
            # one catches up — only while every input is open (an ended input can no longer
            # complete anything) and until the others stay silent for PAUSE_GRACE (an input
            # that filters ids out would otherwise never let it resume: a deadlock).
            ahead = set()
            if len(open_inputs) == len(senders):
                ahead = {name for name in open_inputs if logic.should_pause(name)}
            reading = open_inputs if starving else open_inputs - ahead
            timeout = self._next_report - now
            if deadline is not None:
                timeout = min(timeout, deadline - now)
            readable, _ = poll(
                [self.control, *(inbox_of[n] for n in reading)], timeout=max(0.0, timeout)
            )
            heard: set[str] = set()
            for sock in readable:
                if sock is self.control:
                    self.handle_control()
                elif not outbox.pending:  # nothing more is read while output waits
                    heard.add(self.inboxes[sock])
                    self._read_burst(sock, logic, outbox, senders, open_inputs)
            if not ahead or (heard - ahead and not starving):
                # Caught up, or the lagging inputs speak: pausing works, keep it.
                starved_since, starving = None, False
            elif not starving:
                # Once the others stayed silent that long, read on until the input is no
                # longer ahead; bundle eviction bounds the memory meanwhile.
                starved_since = starved_since or time.monotonic()
                starving = time.monotonic() - starved_since > PAUSE_GRACE
        outbox.emit(logic.finish())

    def _read_burst(
        self,
        sock: Socket,
        logic: WorkerLogic,
        outbox: Outbox,
        senders: dict[str, set[str]],
        open_inputs: set[str],
    ) -> None:
        """Up to READ_BURST frames from one inbox, stopping when output backs up."""
        name = self.inboxes[sock]
        for _ in range(READ_BURST):
            frames = sock.recv(block=False)
            if frames is None:
                return
            header = frames[0]
            if header[:1] == b"E":
                self.ended.add(header[1:].decode())
                if senders[name] <= self.ended:
                    open_inputs.discard(name)
                self.report()
                continue
            try:
                batch = self.codec.loads(frames[1])
            except Exception as exc:  # noqa: BLE001 - a peer's bad frame must not kill us
                self.metrics.errors += 1
                self.metrics.last_error = f"undecodable frame from {header[1:].decode()}: {exc}"
                log.error(
                    "%s: dropped an undecodable frame from %s: %s",
                    self.name,
                    header[1:].decode(),
                    exc,
                )
                continue
            outbox.emit(logic.feed(name, batch))
            if not outbox.flush():
                return

    # -- spouts ----------------------------------------------------------------------

    def run_spout(self, code: UserCode) -> None:
        self.wait_for(lambda: self.started or self.stopping)
        queue = self._queue
        room = threading.Event()
        wake_recv, wake_send = self.transport.pair_signal(f"wake-{os.getpid()}")
        io_idle = [False]
        done = threading.Event()
        fatal: list[BaseException] = []

        def dispatch(seq: int, value: Any) -> None:
            if self.stopping:
                raise SpoutStopped()
            while len(queue) >= SPOUT_QUEUE:
                room.clear()
                if len(queue) < SPOUT_QUEUE:
                    break
                room.wait(0.2)
                if self.stopping:
                    raise SpoutStopped()
            queue.append((seq, value))
            if io_idle[0]:
                io_idle[0] = False
                wake_send.send((b"",), block=False)

        async def dispatch_async(seq: int, value: Any) -> None:
            if len(queue) >= SPOUT_QUEUE and not self.stopping:
                await asyncio.to_thread(_wait_for_room)
            dispatch(seq, value)

        def _wait_for_room() -> None:
            while len(queue) >= SPOUT_QUEUE and not self.stopping:
                room.clear()
                room.wait(0.2)

        def body() -> None:
            try:
                if code.is_async:
                    asyncio.run(code.call(dispatch_async))
                else:
                    code.call(dispatch)
            except SpoutStopped:
                pass
            except Exception as exc:  # noqa: BLE001
                self.metrics.errors += 1
                self.metrics.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("spout %s raised; its stream ends here", self.name)
                if self.topology.settings.on_error == "stop":
                    fatal.append(exc)
            finally:
                done.set()
                wake_send.send((b"",), block=False)

        thread = threading.Thread(target=body, name=f"spout-{self.name}", daemon=True)
        thread.start()
        outbox = self.outbox
        assert outbox is not None
        while True:
            self.maybe_report()
            if outbox.pending and not outbox.flush():
                self.wait_room(outbox.blocked_sockets())
                continue
            if queue:
                n = min(len(queue), MAX_BATCH)
                batch = [queue.popleft() for _ in range(n)]
                room.set()
                self.metrics.emitted += n
                outbox.emit(batch)
                outbox.flush()
                continue
            if done.is_set():
                break
            io_idle[0] = True
            if queue or done.is_set():
                io_idle[0] = False
                continue
            readable, _ = poll(
                [self.control, wake_recv], timeout=max(0.0, self._next_report - time.monotonic())
            )
            io_idle[0] = False
            if wake_recv in readable:
                while wake_recv.recv(block=False) is not None:
                    pass
            if self.control in readable:
                self.handle_control()
                if self.stopping:
                    room.set()
        thread.join()
        if fatal:
            raise FatalError(f"spout {self.name} raised: {fatal[0]!r} (on_error: stop)")


def _setup_logging(name: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [{name}] %(message)s",
    )


def main() -> int:
    spec = json.loads(sys.stdin.read())
    name = f"{spec['component']}/{spec['index']}"
    _setup_logging(name)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    os.chdir(spec["code_dir"])
    if spec["code_dir"] not in sys.path:
        sys.path.insert(0, spec["code_dir"])
    proc = ComponentProcess(spec)
    code = proc.run()
    proc.transport.close()
    return code


if __name__ == "__main__":
    sys.exit(main())

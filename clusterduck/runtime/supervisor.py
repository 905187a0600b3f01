"""The per-host agent: one per topology per host.

``python -m clusterduck.runtime.supervisor`` reads its JSON spec on stdin, detaches
(fork + ``setsid``, so it outlives the terminal or SSH channel that started it), prints
one readiness line (``protocol.SupervisorReady``: control endpoint, pid, paths, its
clusterduck version) and returns. When this host's clusterduck does not match the spec's
``expect_version`` in major.minor, the line is a ``protocol.VersionMismatch`` instead
(exit 3) and nothing starts: ``up`` checks the interpreter with the same remote command
that starts the supervisor. The detached supervisor then spawns the host's component
processes, restarts those that crash (with backoff and a limit), keeps their logs under
``<run_dir>/logs`` and answers the control requests of ``clusterduck up/status/down`` on
a ROUTER socket:

=========  ===================================================================
``spawn``  start every local instance; answer with their inbox endpoints
``wire``   hand every instance all endpoints; answer once all are connected
``start``  let the spouts dispatch
``status`` counters and states of every local instance
``stop``   graceful: spouts stop, everything drains through end of stream
``kill``   kill every local process, sweep the session; the supervisor exits
``abort``  like kill, sent by a peer supervisor when ``on_error: stop`` fired
``leave``  the CLI has what it needs: once ended, exit without lingering
=========  ===================================================================

When every local instance has finished (or failed for good) it writes ``final.json`` —
what ``status`` shows afterwards — answers late requests for a moment, and exits
(at once after ``leave``: ``up --wait`` returns with nothing left running).

``python -m clusterduck.runtime.supervisor --sweep SID NAME`` kills what is left of
topology NAME in a session (used by ``down`` also when the supervisor itself is gone).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .. import __version__
from ..protocol import (
    ControlRequest,
    Hello,
    HostStatus,
    InstanceReport,
    InstanceStatus,
    Op,
    ProcessSpec,
    RunLayout,
    State,
    StepReply,
    SupervisorReady,
    SupervisorSpec,
    VersionMismatch,
    Wiring,
    decode_json,
    process_message_from_dict,
    same_release,
    topology_marker,
)
from .forkserver import ChildProcess, Starter
from .inbound import ControlGuard, Rejections
from .procfs import sweep
from .totals import Carried
from .transport import DATA_LINGER_MS, Transport, poll, private_dir, request

__all__ = ["main"]

log = logging.getLogger("clusterduck.supervisor")

MAX_RESTARTS = 5
# A supervisor that `up` never asks to spawn (the CLI died, or gave up) leaves by itself.
SPAWN_DEADLINE = 180.0
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
KILL_GRACE = 3.0
# A running process reports every 0.5 s (process.REPORT_INTERVAL) between calls of user
# code; one silent this long is inside a single call (status: silent_seconds).
SILENT_AFTER = 3.0
# How long a process that said it finished may take to exit: its data sockets linger
# until what it sent has left (transport.DATA_LINGER_MS), then a little more.
EXIT_GRACE = DATA_LINGER_MS / 1000 + 2.0
# How long a supervisor that ended answers late requests (with its final status) before
# it exits, unless the CLI says `leave`.
LINGER = 0.5
REPLY_LINGER_MS = 500  # at most, for the last answers to leave: a connected peer takes them at once
# The exit code of a process whose user code failed to load, or whose on_error: stop
# fired: no restart (process.EXIT_USER_FAILURE; not imported, to keep this module light).
EXIT_USER_FAILURE = 3


class Instance:
    """One local instance: its process, state and what it last reported. (A plain
    class: a dataclass costs about a millisecond to define at every supervisor start.)"""

    def __init__(self, component: str, index: int, log_path: Path) -> None:
        self.component = component
        self.index = index
        self.log_path = log_path
        self.popen: ChildProcess | None = None  # forked (forkserver.py) or a fresh interpreter
        self.state = State.STARTING
        self.endpoints: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.report: InstanceReport | None = None  # the current incarnation's last
        # What the incarnations before it counted (a restarted process counts from 0).
        self.carried = Carried()
        # Upstream instances whose end of stream any incarnation received.
        self.ended: set[str] = set()
        self.reported_at = 0.0  # time.monotonic() of the last report (0: none yet)
        self.ready = False
        self.restarts = 0
        self.lost = 0
        # The senders' reports whose in-flight count went into ``lost`` (Supervisor._lost_with).
        self.counted: dict[str, InstanceReport] = {}
        self.restart_at: float | None = None
        self.error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.component}/{self.index}"

    @property
    def done(self) -> bool:
        return self.state.ended


class Supervisor:
    def __init__(self, spec: SupervisorSpec, ipc_dir: str | None = None) -> None:
        self.spec = spec
        self.ipc_dir = ipc_dir  # private local mode: every socket is a file in here
        self.topology = spec.topology
        self.host = spec.host
        self.layout = RunLayout(spec.run_dir)
        self.run_dir = Path(spec.run_dir)
        Path(self.layout.logs).mkdir(parents=True, exist_ok=True)
        self.curve = spec.curve
        if self.curve is not None:
            # Every process of a CURVE topology starts the ZAP handler; imported here,
            # before the fork server, each fork inherits the module.
            from . import zap  # noqa: F401
        # Before the ZeroMQ context: the fork server must not inherit one (forkserver.py).
        self.starter = Starter(spec.env)
        self.transport = Transport(self.curve, ipc_dir=ipc_dir)
        self.control = self.transport.router(spec.bind_host, spec.advertise, name="supervisor")
        self.procs = self.transport.router("127.0.0.1", "127.0.0.1", name="processes")
        # Every control frame (from the CLI, peers, processes) is decoded by this guard.
        self.rejections = Rejections(f"supervisor {self.host}")
        self.guard = ControlGuard(self.rejections)
        self.instances: dict[str, Instance] = {}
        # A Slurm group runs one supervisor per node: node ``rank`` of ``size`` takes
        # every size-th instance placed on the group (SupervisorSpec.runs).
        for comp, index, host in self.topology.instances():
            if spec.runs(comp, index, host):
                inst = Instance(comp, index, Path(self.layout.instance_log(comp, index)))
                self.instances[inst.name] = inst
        self.wiring: Wiring | None = None
        self.peers: list[str] = []
        self.started = False
        self.stopping = False  # graceful: spouts stop, everything drains
        self.killed = False  # kill/abort: nothing is restarted any more
        self.spawned = False
        self.failure: str | None = None
        self.waiters: list[tuple[bytes, Op, float]] = []  # (client id, op, deadline)
        self.greeted: set[str] = set()
        self.began = time.time()
        self._all_done_at: float | None = None  # when every instance had said it ended
        self.leave = False  # `leave` came: no lingering after final.json

    # -- processes -----------------------------------------------------------------

    def spawn(self, inst: Instance, *, restart: bool = False) -> None:
        spec = self.spec
        proc_spec = ProcessSpec(
            topology=self.topology,
            component=inst.component,
            index=inst.index,
            host=self.host,
            code_dir=spec.code_dir,
            bind_host=spec.bind_host,
            advertise=spec.advertise,
            supervisor=self.procs.endpoint,
            curve=spec.curve.for_instance(inst.name) if spec.curve else None,
            stop=self.stopping,
            ipc_dir=self.ipc_dir,
            state_dir=str(self.run_dir / "state"),
        )
        if restart:
            if inst.report is not None:
                # The last word of the incarnation that crashed: its counters go on in
                # the new one's totals, the ends of stream it saw into its spec.
                inst.carried.add(inst.report)
                inst.ended.update(inst.report.ended)
                inst.report = None
            ended = inst.ended | self.finished_upstreams(inst)
            proc_spec = proc_spec.replace(
                ports=inst.ports,
                wiring=self.wiring,
                start=True,
                ended=tuple(sorted(ended)),
            )
        inst.restart_at = None
        try:
            inst.popen = self.starter.start(
                inst.name,
                json.dumps(proc_spec.to_dict()),
                inst.log_path,
                spec.code_dir,
                topology_marker(self.topology.name),
            )
        except OSError as exc:
            inst.state = State.FAILED
            inst.error = f"could not start {inst.name} in {spec.code_dir}: {exc}"
            log.error("%s", inst.error)
            return
        inst.state = State.STARTING
        if not restart:
            inst.ready = False
        log.info(
            "started %s (pid %d)%s",
            inst.name,
            inst.popen.pid,
            f", restart {inst.restarts}" if restart else "",
        )

    def finished_upstreams(self, inst: Instance) -> set[str]:
        """Upstream instances that already finished: their end of stream may have died
        with the crashed process, and they will not send it again.

        Peers are asked in parallel; a peer supervisor that does not answer has exited,
        which it does only once all of its instances are done."""
        comp = self.topology.component(inst.component)
        inputs = set(comp.inputs)
        if not inputs:
            return set()
        rows: list[InstanceStatus] = list(self.status().instances)
        peers = [p for p in self.peers if p != self.control.endpoint]
        answers: dict[str, HostStatus | None] = {}

        def ask(peer: str) -> None:
            try:
                reply = request(
                    peer, ControlRequest(Op.STATUS).to_dict(), timeout=2, curve=self.curve
                )
                answers[peer] = HostStatus.from_dict(reply)
            except Exception:  # noqa: BLE001 - a peer that does not answer has exited
                answers[peer] = None

        threads = [threading.Thread(target=ask, args=(p,), daemon=True) for p in peers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(3)
        done_hosts = set()
        for peer in peers:
            answer = answers.get(peer)
            if answer is None:
                done_hosts.add(peer)
            else:
                rows.extend(answer.instances)
        finished = {
            f"{r.component}/{r.index}"
            for r in rows
            if r.component in inputs and r.state is State.FINISHED
        }
        if done_hosts:  # every instance of a gone supervisor is done
            answered = {f"{r.component}/{r.index}" for r in rows}
            for name in inputs:
                for i in range(self.topology.component(name).parallelism):
                    if f"{name}/{i}" not in answered:
                        finished.add(f"{name}/{i}")
        return finished

    def check_children(self) -> None:
        now = time.monotonic()
        for inst in self.instances.values():
            if inst.restart_at is not None and now >= inst.restart_at and not self.killed:
                # Counted now, not at the crash: by now (the back-off is at least one
                # report interval) the senders' reports show what it never processed.
                inst.lost += self._lost_with(inst)
                self.spawn(inst, restart=True)
                continue
            if inst.popen is None or inst.popen.poll() is None:
                continue
            code = inst.popen.returncode
            inst.popen = None
            self.await_last_report(inst, code)
            if inst.state is State.FINISHED or (code == 0 and inst.state is not State.STARTING):
                inst.state = State.FINISHED
                continue
            if inst.state is State.FAILED:
                # It said so (failed to load, or on_error: stop): no restart. An exit
                # code 3 without that word is user code calling sys.exit(3): a crash.
                inst.state = State.FAILED
                self._gave_up(inst)
                continue
            why = f"exited with {_describe_exit(code)}"
            log.warning("%s %s", inst.name, why)
            _note_in_log(inst.log_path, f"WARNING [{inst.name}] {why} (clusterduck supervisor)")
            inst.error = why
            if not self.started or self.killed:
                # A crash while starting fails `up` instead of looping on restarts.
                inst.state = State.FAILED if not self.started else State.CRASHED
            elif inst.restarts < MAX_RESTARTS:
                inst.restarts += 1
                inst.state = State.STARTING
                inst.restart_at = now + min(BACKOFF_MAX, BACKOFF_START * 2 ** (inst.restarts - 1))
            else:
                inst.state = State.CRASHED
                inst.error = f"{why}; gave up after {MAX_RESTARTS} restarts"
                self._gave_up(inst)

    def _lost_with(self, inst: Instance) -> int:
        """What a crash of ``inst`` cost under at-most-once: what it held (its backlog)
        and what this host's senders had in flight towards it, from their last reports
        (each report counted once, so a second crash does not count it again). Senders
        on other hosts are not seen here. Under at-least-once nothing is lost: replayed.
        """
        if self.topology.at_least_once:
            return 0
        lost = inst.report.backlog if inst.report else 0
        for sender in self.instances.values():
            report = sender.report
            if report is None or sender is inst or inst.counted.get(sender.name) is report:
                continue
            flying = sum(e.in_flight for e in report.edges if e.to == inst.name)
            if flying:
                inst.counted[sender.name] = report
                lost += flying
        return lost

    def _gave_up(self, inst: Instance) -> None:
        """An instance gone for good after the start: its downstream would wait forever
        for its end of stream, so the topology fails rather than hang."""
        if self.started and not self.killed:
            self.fail_topology(f"{inst.name}: {inst.error or 'failed'}")

    def on_process_message(self, ident: bytes, msg: Hello | InstanceReport) -> None:
        inst = self.instances.get(ident.decode(errors="replace"))
        if inst is None:
            return
        if isinstance(msg, Hello):
            inst.endpoints = dict(msg.endpoints)
            inst.ports = dict(msg.ports)
            self.greeted.add(inst.name)
        elif msg.op is Op.FAILED:
            inst.state = State.FAILED
            inst.error = msg.error
        else:
            inst.report = msg
            inst.reported_at = time.monotonic()
            inst.state = msg.state
            if msg.op is Op.READY:
                inst.ready = True
                if self.started:
                    self.send_to(inst, ControlRequest(Op.START))
                if self.stopping:
                    self.send_to(inst, ControlRequest(Op.STOP))
            if msg.op is Op.FATAL:
                inst.state = State.FAILED
                inst.error = msg.last_error
                self.fail_topology(f"{inst.name}: {inst.error} (on_error: stop)")

    def send_to(self, inst: Instance, msg: ControlRequest) -> None:
        self.procs.send_json(msg.to_dict(), prefix=[inst.name.encode()])

    def kill_all(self) -> None:
        import subprocess  # for Popen's TimeoutExpired: imported when needed, not at start

        live = [i.popen for i in self.instances.values() if i.popen is not None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        for p in live:
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for inst in self.instances.values():
            inst.popen = None
            inst.restart_at = None
            if not inst.done:
                inst.state = State.FAILED if self.failure else State.CRASHED

    def fail_topology(self, reason: str) -> None:
        if self.failure:
            return
        self.failure = reason
        self.killed = True
        log.error("topology failed: %s", reason)
        for peer in self.peers:
            if peer != self.control.endpoint:
                # In the background: the loop keeps answering while peers are told.
                threading.Thread(target=self._tell_abort, args=(peer, reason), daemon=True).start()
        self.kill_all()

    def _tell_abort(self, peer: str, reason: str) -> None:
        try:
            abort = ControlRequest(Op.ABORT, reason=reason)
            request(peer, abort.to_dict(), timeout=2, curve=self.curve)
        except Exception:  # noqa: BLE001 - a dead peer is already stopped
            log.warning("could not tell %s to abort", peer)

    # -- control requests ------------------------------------------------------------

    def status(self) -> HostStatus:
        rows = []
        for inst in self.instances.values():
            rep = inst.report
            row = InstanceStatus(inst.component, inst.index, self.host, inst.state)
            if rep is not None:
                row = row.replace(
                    received=rep.received,
                    emitted=rep.emitted,
                    errors=rep.errors,
                    anomalies=rep.anomalies,
                    backlog=rep.backlog,
                    blocked_seconds=rep.blocked_seconds,
                    rate=rep.rate,
                    uptime=rep.uptime,
                    in_flight=rep.in_flight,
                    cost_ms=rep.cost_ms,
                    edges=rep.edges,
                    rejected_frames=rep.rejected_frames,
                    pending=rep.pending,
                    replayed=rep.replayed,
                    gap=rep.gap if inst.state is State.RUNNING else None,
                )
            rows.append(
                inst.carried.onto(row).replace(
                    pid=inst.popen.pid if inst.popen else (rep.pid if rep else None),
                    endpoint=next(iter(inst.endpoints.values()), None),
                    rate=row.rate if inst.state is State.RUNNING else 0.0,
                    restarts=inst.restarts,
                    lost=inst.lost,
                    last_error=(rep.last_error if rep else None) or inst.error,
                    silent_seconds=self._silent(inst),
                )
            )
        return HostStatus(
            self.host,
            self.overall_state(),
            os.getpid(),
            self.failure,
            tuple(rows),
            rejected_frames=self.rejections.as_dict(),
        )

    @staticmethod
    def _silent(inst: Instance) -> float:
        """Seconds since a running instance last reported, once past SILENT_AFTER: a
        process reports between calls of user code, so one call has run that long."""
        if inst.state not in (State.RUNNING, State.DRAINING) or not inst.reported_at:
            return 0.0
        silent = time.monotonic() - inst.reported_at
        return round(silent, 1) if silent >= SILENT_AFTER else 0.0

    def overall_state(self) -> State:
        if self.failure:
            return State.FAILED
        states = {i.state for i in self.instances.values()}
        if states <= {State.FINISHED}:
            return State.FINISHED
        if states & {State.FAILED, State.CRASHED} and all(i.done for i in self.instances.values()):
            return State.FAILED
        return State.RUNNING if self.started else State.STARTING

    def on_request(self, ident: bytes, msg: ControlRequest) -> None:
        op = msg.op
        reply: StepReply | HostStatus | None = StepReply(ok=True)
        if op is Op.SPAWN:
            self.spawned = True
            for name in reversed(self.topology.topological_order()):
                for inst in self.instances.values():
                    if inst.component == name:
                        self.spawn(inst)
            reply = None
            self.waiters.append((ident, op, time.monotonic() + (msg.timeout or 60)))
        elif op is Op.WIRE:
            self.wiring = msg.wiring
            self.peers = list(msg.supervisors)
            for inst in self.instances.values():
                self.send_to(inst, ControlRequest(Op.WIRE, wiring=self.wiring))
            reply = None
            self.waiters.append((ident, op, time.monotonic() + (msg.timeout or 60)))
        elif op is Op.START:
            self.started = True
            for inst in self.instances.values():
                self.send_to(inst, ControlRequest(Op.START))
        elif op is Op.STATUS:
            reply = self.status()
        elif op is Op.LEAVE:
            self.leave = True  # takes effect once everything here has ended
        elif op is Op.STOP:
            self.stopping = True
            for inst in self.instances.values():
                self.send_to(inst, ControlRequest(Op.STOP))
        elif op in (Op.KILL, Op.ABORT):
            if op is Op.ABORT:
                self.failure = self.failure or msg.reason or "aborted by a peer"
            self.stopping = self.killed = True
            self.kill_all()
            # What a process forked on its own is gone too: `down` needs no SSH sweep.
            reply = StepReply(ok=True, swept=sweep(os.getsid(0), self.topology.name))
        else:
            reply = StepReply(ok=False, error=f"op {op.value!r} is not for a supervisor")
        if reply is not None:
            self.control.send_json(reply.to_dict(), prefix=[ident, b""])

    def answer_waiters(self) -> None:
        now = time.monotonic()
        for waiter in list(self.waiters):
            ident, op, deadline = waiter
            reply = self._waiter_reply(op, now >= deadline)
            if reply is not None:
                self.waiters.remove(waiter)
                self.control.send_json(reply.to_dict(), prefix=[ident, b""])

    def _waiter_reply(self, op: Op, expired: bool) -> StepReply | None:
        failed = [i for i in self.instances.values() if i.state in (State.FAILED, State.CRASHED)]
        if failed:
            inst = failed[0]
            return StepReply(
                ok=False,
                component=inst.name,
                error=inst.error or "failed to start",
                log_tail=_tail(inst.log_path, 30),
            )
        insts = list(self.instances.values())
        if op is Op.SPAWN and all(i.name in self.greeted for i in insts):
            return StepReply(ok=True, endpoints={i.name: i.endpoints for i in insts})
        if op is Op.WIRE and all(i.ready for i in insts):
            return StepReply(ok=True)
        if expired:
            slow = [
                i.name for i in insts if not (i.ready if op is Op.WIRE else i.name in self.greeted)
            ]
            return StepReply(
                ok=False,
                component=", ".join(slow),
                error=f"no {op.value} answer in time from " + ", ".join(slow),
                log_tail=_tail(self.instances[slow[0]].log_path, 30) if slow else "",
            )
        return None

    # -- main loop -------------------------------------------------------------------

    def read_processes(self) -> None:
        """Act on every message from a process that is waiting (never blocks)."""
        while (frames := self.procs.recv(block=False)) is not None:
            message = self.guard.decode(frames, process_message_from_dict, min_frames=2)
            if message is not None:
                self.guard.dispatch(self.on_process_message, frames[0], message)

    def await_last_report(self, inst: Instance, code: int, within: float = 1.0) -> None:
        """A process says how it ended just before it exits: ``finished`` with its last
        counters (exit 0), or why it failed (exit 3). A forked process exits fast enough
        to be seen gone before that report is read, so wait for it a little."""
        if code not in (0, EXIT_USER_FAILURE):
            return

        def said() -> bool:
            return inst.state is (State.FINISHED if code == 0 else State.FAILED)

        deadline = time.monotonic() + within
        while not said() and (left := deadline - time.monotonic()) > 0:
            readable, _ = poll([self.procs], timeout=left)
            if self.procs in readable:
                self.read_processes()

    def run(self) -> None:
        while True:
            readable, _ = poll([self.control, self.procs], timeout=0.1)
            if self.procs in readable:
                self.read_processes()
            if self.control in readable:
                while (frames := self.control.recv(block=False)) is not None:
                    # [client identity, empty delimiter, request]
                    request_ = self.guard.decode(frames, ControlRequest.from_dict, min_frames=3)
                    if request_ is None:
                        if len(frames) == 3:  # a client that waits for an answer gets one
                            reply = StepReply(ok=False, error="malformed request (dropped)")
                            self.control.send_json(reply.to_dict(), prefix=[frames[0], b""])
                        continue
                    self.guard.dispatch(self.on_request, frames[0], request_)
            self.check_children()
            self.answer_waiters()
            if (
                self.instances
                and all(i.done for i in self.instances.values())
                and (self.started or self.failure or self.stopping)
                and not self._exits_pending()
            ):
                break
            if not self.instances and self.stopping:
                break
            if not self.spawned and time.time() - self.began > SPAWN_DEADLINE:
                log.error("nobody asked to spawn within %gs; exiting", SPAWN_DEADLINE)
                break
        self.write_final()

    def _exits_pending(self) -> bool:
        """True while a process that said it ended has not exited yet (for at most
        EXIT_GRACE): it reports ``finished`` once its last frames and end of stream are
        queued, and its sockets then linger until they have left. The sweep in
        write_final must not kill it meanwhile: a sink writing to a slow test collector
        over ipc (a unix socket buffers ~200 KiB) lost its last frames and its end of
        stream that way, and so could any sender whose peer reads late."""
        if self.killed or all(i.popen is None for i in self.instances.values()):
            return False
        now = time.monotonic()
        if self._all_done_at is None:
            self._all_done_at = now
        return now - self._all_done_at < EXIT_GRACE

    def write_final(self) -> None:
        # Sweep before final.json appears: a host with a final status has nothing left
        # (the fork server included: reaped here, not left to exit after us).
        sweep(os.getsid(0), self.topology.name)
        self.starter.close()
        final = self.status().to_dict()
        target = Path(self.layout.final_status)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(final))
        tmp.replace(target)
        log.info("all local instances done (%s); supervisor exits", final["state"])
        # Answer anything still asking before leaving (what is queued even after
        # `leave`); a `leave` ends the wait.
        deadline = time.monotonic() + LINGER
        while True:
            while (frames := self.control.recv(block=False)) is not None:
                self.control.send_json(final, prefix=[frames[0], b""])
                asked = self.guard.decode(frames, ControlRequest.from_dict, min_frames=3)
                self.leave = self.leave or (asked is not None and asked.op is Op.LEAVE)
            left = deadline - time.monotonic()
            if self.leave or left <= 0:
                break
            poll([self.control], timeout=min(0.1, left))
        # The answers just sent must leave before the context ends (closing with no
        # linger dropped them: the CLI then waited out its request timeout).
        self.control.close(linger_ms=REPLY_LINGER_MS)


def _note_in_log(path: Path, line: str) -> None:
    """A line in an instance's own log: `logs NAME COMPONENT`, where a restart's hint
    points, then shows why the process ended (a SIGKILL leaves nothing there itself)."""
    # In the process's own log format (runtime/process.py), so that readers of the log
    # (the dashboard's events) see a line of its own, not part of a traceback.
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    stamp += f",{int(now * 1000) % 1000:03d}"
    try:
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(f"{stamp} {line}\n")
    except OSError:
        pass  # the log is a convenience; the supervisor's own log has the line too


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 20_000))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _daemonize_and_run(spec: SupervisorSpec) -> int:
    # `~` in a host's workdir means that host's home: expanded here, on the host.
    spec = spec.replace(
        run_dir=os.path.expanduser(spec.run_dir),
        code_dir=os.path.expanduser(spec.code_dir),
    )
    layout = RunLayout(spec.run_dir)
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)  # logs hold the user's data and tracebacks
    ipc_dir = private_dir(spec.topology.name) if spec.private else None
    Path(layout.final_status).unlink(missing_ok=True)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        # The starter: relay the child's readiness line (or its failure) and return.
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            line = pipe.read().decode().strip()
        if not line:
            sys.stderr.write(_tail(Path(layout.supervisor_log), 30) + "\n")
            return 1
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        # `up` waits for this process to end: skip the interpreter's teardown.
        os._exit(0)
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    logfd = os.open(layout.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [supervisor {spec.host}] %(message)s",
    )
    sup: Supervisor | None = None
    try:
        sup = Supervisor(spec, ipc_dir)
        ready = SupervisorReady(
            sup.control.endpoint,
            os.getpid(),
            spec.run_dir,
            spec.code_dir,
            clusterduck=__version__,
            ipc_dir=ipc_dir,
        )
        os.write(write_fd, (json.dumps(ready.to_dict()) + "\n").encode())
        os.close(write_fd)
        sup.run()
        sup.transport.close(linger_ms=0)
    except Exception:
        log.exception("supervisor failed")
        if sup is not None:
            sup.kill_all()
        _remove_private_dir(ipc_dir)
        os._exit(1)
    _remove_private_dir(ipc_dir)
    os._exit(0)


def _run_in_slurm_step(spec: SupervisorSpec) -> int:
    """One node's supervisor inside the group's ``srun`` step, in the foreground, so
    Slurm tracks it and every process it spawns (no fork, no new session). It tells
    ``up`` it is ready by a message to ``report_to`` (no shared file system needed)."""
    import base64
    import io
    import socket
    import tarfile

    env = os.environ
    rank, size = int(env.get("SLURM_NODEID", "0")), int(env.get("SLURM_JOB_NUM_NODES", "1"))
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    # A node that is the machine `up` ran on is reached like localhost (loopback when
    # the whole topology is on this machine); any other node by its name.
    machine = socket.gethostname()
    here = spec.this_machine
    if here is not None and (machine in here.names or machine.split(".")[0] in here.names):
        bind_host, advertise = here.bind_host, here.advertise
    else:
        bind_host, advertise = "0.0.0.0", machine
    archive = spec.code_archive
    spec = spec.replace(
        run_dir=f"{os.path.expanduser(spec.run_dir)}/node{rank}",
        code_dir=os.path.expanduser(spec.code_dir),
        share=(rank, size),
        bind_host=bind_host,
        advertise=advertise,
        this_machine=None,
        code_archive=None,
    )
    layout = RunLayout(spec.run_dir)
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    Path(layout.final_status).unlink(missing_ok=True)
    if archive:  # no shared file system: unpack the code shipped inside the job script
        code = Path(spec.code_dir)
        code.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive)), mode="r:gz") as tar:
            tar.extractall(code, filter="data")
    logfd = os.open(layout.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [supervisor {spec.host}#{rank}] %(message)s",
    )
    if spec.report_to is None:
        log.error("a --slurm spec needs report_to")
        return 1
    sup: Supervisor | None = None
    try:
        sup = Supervisor(spec)
        ready = SupervisorReady(
            sup.control.endpoint,
            os.getpid(),
            spec.run_dir,
            spec.code_dir,
            rank,
            node,
            clusterduck=__version__,
        )
        report = sup.transport.push(spec.report_to)
        report.send_json(ready.to_dict())
        # wait_connected() detaches the handshake monitor (an open one blocks close()).
        sup.transport.wait_connected([report], timeout=10.0)
        sup.run()
        sup.transport.close(linger_ms=0)
    except Exception:
        log.exception("supervisor failed")
        if sup is not None:
            sup.kill_all()
        os._exit(1)
    # As the detached supervisor does: leave without waiting on helper threads, so
    # the job step (and with it the job) ends as soon as the work is done.
    os._exit(0)


def version_problem(expected: str | None) -> VersionMismatch | None:
    """Why this host cannot run ``up``'s version, checked before anything starts.

    ``up`` learns it from the one remote command that starts the supervisor: no separate
    interpreter start-up probes the host."""
    if expected is None or same_release(expected, __version__):
        return None
    return VersionMismatch(__version__, sys.version.split()[0], sys.executable)


def _remove_private_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--sweep"]:
        print(sweep(int(args[1]), args[2]))
        return 0
    text = sys.stdin.read()
    if not text.strip():
        # `up` started this interpreter early (clusterduck/prestart.py), then did not
        # need it: nothing was started, nothing to say.
        return 0
    raw = decode_json(text)
    # Before the spec is parsed: one from another release may not parse at all.
    problem = version_problem(SupervisorSpec.expected_version(raw))
    if problem is not None:
        sys.stdout.write(json.dumps(problem.to_dict()) + "\n")
        return VersionMismatch.EXIT_CODE
    spec = SupervisorSpec.from_dict(raw)
    if args[:1] == ["--slurm"]:
        return _run_in_slurm_step(spec)
    return _daemonize_and_run(spec)


if __name__ == "__main__":
    sys.exit(main())

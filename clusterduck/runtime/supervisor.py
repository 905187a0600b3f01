"""The per-host agent: one per topology per host.

``python -m clusterduck.runtime.supervisor`` reads its JSON spec on stdin, detaches
(fork + ``setsid``, so it outlives the terminal or SSH channel that started it), prints
one readiness line ``{"control": endpoint, "pid": n}`` and returns. The detached
supervisor then spawns the host's component processes, restarts those that crash (with
backoff and a limit), keeps their logs under ``<run_dir>/logs`` and answers the control
requests of ``clusterduck up/status/down`` on a ROUTER socket:

=========  ===================================================================
``spawn``  start every local instance; answer with their inbox endpoints
``wire``   hand every instance all endpoints; answer once all are connected
``start``  let the spouts dispatch
``status`` counters and states of every local instance
``stop``   graceful: spouts stop, everything drains through end of stream
``kill``   kill every local process now; the supervisor exits
``abort``  like kill, sent by a peer supervisor when ``on_error: stop`` fired
=========  ===================================================================

When every local instance has finished (or failed for good) it writes ``final.json`` —
what ``status`` shows afterwards — and exits.

``python -m clusterduck.runtime.supervisor --sweep SID NAME`` kills what is left of
topology NAME in a session (used by ``down`` also when the supervisor itself is gone).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..topology import Topology
from .process import EXIT_USER_FAILURE
from .procfs import session_members
from .transport import CurveKeys, Transport, poll, request

__all__ = ["main"]

log = logging.getLogger("clusterduck.supervisor")

MAX_RESTARTS = 5
# A supervisor that `up` never asks to spawn (the CLI died, or gave up) leaves by itself.
SPAWN_DEADLINE = 180.0
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
KILL_GRACE = 3.0


@dataclass
class Instance:
    component: str
    index: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    state: str = "starting"
    endpoints: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    restarts: int = 0
    lost: int = 0
    restart_at: float | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.component}/{self.index}"

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "crashed")


class Supervisor:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.topology = Topology.model_validate(spec["topology"])
        self.host: str = spec["host"]
        self.run_dir = Path(spec["run_dir"])
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.curve = CurveKeys.from_dict(spec.get("curve"))
        self.transport = Transport(self.curve)
        self.control = self.transport.router(spec["bind_host"], spec["advertise"])
        self.procs = self.transport.router("127.0.0.1", "127.0.0.1")
        self.instances: dict[str, Instance] = {}
        for comp, index, host in self.topology.instances():
            if host == self.host:
                inst = Instance(comp, index, self.logs / f"{comp}.{index}.log")
                self.instances[inst.name] = inst
        self.wiring: dict[str, Any] | None = None
        self.peers: list[str] = []
        self.started = False
        self.stopping = False  # graceful: spouts stop, everything drains
        self.killed = False  # kill/abort: nothing is restarted any more
        self.spawned = False
        self.failure: str | None = None
        self.waiters: list[tuple[bytes, str, float]] = []  # (client id, op, deadline)
        self.greeted: set[str] = set()
        self.began = time.time()

    # -- processes -----------------------------------------------------------------

    def spawn(self, inst: Instance, *, restart: bool = False) -> None:
        proc_spec = {
            "topology": self.spec["topology"],
            "component": inst.component,
            "index": inst.index,
            "host": self.host,
            "code_dir": self.spec["code_dir"],
            "bind_host": self.spec["bind_host"],
            "advertise": self.spec["advertise"],
            "supervisor": self.procs.endpoint,
            "curve": self.spec.get("curve"),
            "stop": self.stopping,
        }
        if restart:
            proc_spec.update(
                ports=inst.ports,
                wiring=self.wiring,
                start=True,
                ended=sorted(set(inst.report.get("ended", [])) | self.finished_upstreams(inst)),
            )
        env = {**os.environ, **self.spec.get("env", {}), "PYTHONUNBUFFERED": "1"}
        inst.restart_at = None
        try:
            with open(inst.log_path, "ab") as logfile:
                inst.popen = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "clusterduck.runtime.process",
                        *topology_marker(self.topology.name),
                        inst.name,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    cwd=self.spec["code_dir"],
                    env=env,
                )
            assert inst.popen.stdin is not None
            inst.popen.stdin.write(json.dumps(proc_spec).encode())
            inst.popen.stdin.close()
        except OSError as exc:
            inst.state = "failed"
            inst.error = f"could not start {inst.name} in {self.spec['code_dir']}: {exc}"
            log.error("%s", inst.error)
            return
        inst.state = "starting"
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
        inputs = set(getattr(comp, "inputs", []))
        if not inputs:
            return set()
        rows: list[dict[str, Any]] = list(self.status()["instances"])
        peers = [p for p in self.peers if p != self.control.endpoint]
        answers: dict[str, dict[str, Any] | None] = {}

        def ask(peer: str) -> None:
            try:
                answers[peer] = request(peer, {"op": "status"}, timeout=2, curve=self.curve)
            except Exception:  # noqa: BLE001
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
                rows.extend(answer.get("instances", []))
        finished = {
            f"{r['component']}/{r['index']}"
            for r in rows
            if r["component"] in inputs and r["state"] == "finished"
        }
        if done_hosts:  # every instance of a gone supervisor is done
            answered = {f"{r['component']}/{r['index']}" for r in rows}
            for name in inputs:
                for i in range(self.topology.component(name).parallelism):
                    if f"{name}/{i}" not in answered:
                        finished.add(f"{name}/{i}")
        return finished

    def check_children(self) -> None:
        now = time.monotonic()
        for inst in self.instances.values():
            if inst.restart_at is not None and now >= inst.restart_at and not self.killed:
                self.spawn(inst, restart=True)
                continue
            if inst.popen is None or inst.popen.poll() is None:
                continue
            code = inst.popen.returncode
            inst.popen = None
            if inst.state == "finished" or (code == 0 and inst.state != "starting"):
                inst.state = "finished"
                continue
            if code == EXIT_USER_FAILURE or inst.state == "failed":
                inst.state = "failed"
                self._gave_up(inst)
                continue
            why = f"exited with {_describe_exit(code)}"
            log.warning("%s %s", inst.name, why)
            inst.error = why
            if not self.started or self.killed:
                # A crash while starting fails `up` instead of looping on restarts.
                inst.state = "failed" if not self.started else "crashed"
            elif inst.restarts < MAX_RESTARTS:
                inst.lost += int(inst.report.get("backlog", 0))
                inst.restarts += 1
                inst.state = "starting"
                inst.restart_at = now + min(BACKOFF_MAX, BACKOFF_START * 2 ** (inst.restarts - 1))
            else:
                inst.state = "crashed"
                inst.error = f"{why}; gave up after {MAX_RESTARTS} restarts"
                self._gave_up(inst)

    def _gave_up(self, inst: Instance) -> None:
        """An instance gone for good after the start: its downstream would wait forever
        for its end of stream, so the topology fails rather than hang."""
        if self.started and not self.killed:
            self.fail_topology(f"{inst.name}: {inst.error or 'failed'}")

    def on_process_message(self, ident: bytes, msg: dict[str, Any]) -> None:
        inst = self.instances.get(ident.decode())
        if inst is None:
            return
        op = msg.get("op")
        if op == "hello":
            inst.endpoints = msg["endpoints"]
            inst.ports = msg["ports"]
            self.greeted.add(inst.name)
        elif op == "failed":
            inst.state = "failed"
            inst.error = msg.get("error")
        elif op in ("ready", "report", "finished", "fatal"):
            inst.report = msg
            inst.state = msg.get("state", inst.state)
            if op == "ready":
                inst.ready = True
                if self.started:
                    self.send_to(inst, {"op": "start"})
                if self.stopping:
                    self.send_to(inst, {"op": "stop"})
            if op == "fatal":
                inst.state = "failed"
                inst.error = msg.get("last_error")
                self.fail_topology(f"{inst.name}: {inst.error} (on_error: stop)")

    def send_to(self, inst: Instance, msg: dict[str, Any]) -> None:
        self.procs.send_json(msg, prefix=[inst.name.encode()])

    def kill_all(self) -> None:
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
                inst.state = "failed" if self.failure else "crashed"

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
            request(peer, {"op": "abort", "reason": reason}, timeout=2, curve=self.curve)
        except Exception:  # noqa: BLE001 - a dead peer is already stopped
            log.warning("could not tell %s to abort", peer)

    # -- control requests ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        rows = []
        for inst in self.instances.values():
            rep = inst.report
            row = instance_row(inst.component, inst.index, self.host, inst.state)
            row.update({key: rep[key] for key in _REPORTED if key in rep})
            row.update(
                pid=inst.popen.pid if inst.popen else rep.get("pid"),
                endpoint=next(iter(inst.endpoints.values()), None),
                rate=row["rate"] if inst.state == "running" else 0.0,
                restarts=inst.restarts,
                lost=inst.lost,
                last_error=rep.get("last_error") or inst.error,
            )
            rows.append(row)
        return {
            "host": self.host,
            "pid": os.getpid(),
            "state": self.overall_state(),
            "failure": self.failure,
            "instances": rows,
        }

    def overall_state(self) -> str:
        if self.failure:
            return "failed"
        states = {i.state for i in self.instances.values()}
        if states <= {"finished"}:
            return "finished"
        if states & {"failed", "crashed"} and all(i.done for i in self.instances.values()):
            return "failed"
        return "running" if self.started else "starting"

    def on_request(self, ident: bytes, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        reply: dict[str, Any] | None = {"ok": True}
        if op == "spawn":
            self.spawned = True
            for name in reversed(self.topology.topological_order()):
                for inst in self.instances.values():
                    if inst.component == name:
                        self.spawn(inst)
            reply = None
            self.waiters.append((ident, "spawn", time.monotonic() + msg.get("timeout", 60)))
        elif op == "wire":
            self.wiring = {"endpoints": msg["endpoints"], "collector": msg.get("collector")}
            self.peers = msg.get("supervisors", [])
            for inst in self.instances.values():
                self.send_to(inst, {"op": "wire", **self.wiring})
            reply = None
            self.waiters.append((ident, "wire", time.monotonic() + msg.get("timeout", 60)))
        elif op == "start":
            self.started = True
            for inst in self.instances.values():
                self.send_to(inst, {"op": "start"})
        elif op == "status":
            reply = self.status()
        elif op == "stop":
            self.stopping = True
            for inst in self.instances.values():
                self.send_to(inst, {"op": "stop"})
        elif op in ("kill", "abort"):
            if op == "abort":
                self.failure = self.failure or msg.get("reason", "aborted by a peer")
            self.stopping = self.killed = True
            self.kill_all()
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}"}
        if reply is not None:
            self.control.send_json(reply, prefix=[ident, b""])

    def answer_waiters(self) -> None:
        now = time.monotonic()
        for waiter in list(self.waiters):
            ident, op, deadline = waiter
            reply = self._waiter_reply(op, now >= deadline)
            if reply is not None:
                self.waiters.remove(waiter)
                self.control.send_json(reply, prefix=[ident, b""])

    def _waiter_reply(self, op: str, expired: bool) -> dict[str, Any] | None:
        failed = [i for i in self.instances.values() if i.state in ("failed", "crashed")]
        if failed:
            inst = failed[0]
            return {
                "ok": False,
                "component": inst.name,
                "error": inst.error or "failed to start",
                "log_tail": _tail(inst.log_path, 30),
            }
        insts = list(self.instances.values())
        if op == "spawn" and all(i.name in self.greeted for i in insts):
            return {"ok": True, "endpoints": {i.name: i.endpoints for i in insts}}
        if op == "wire" and all(i.ready for i in insts):
            return {"ok": True}
        if expired:
            slow = [
                i.name for i in insts if not (i.ready if op == "wire" else i.name in self.greeted)
            ]
            return {
                "ok": False,
                "component": ", ".join(slow),
                "error": f"no {op} answer in time from " + ", ".join(slow),
                "log_tail": _tail(self.instances[slow[0]].log_path, 30) if slow else "",
            }
        return None

    # -- main loop -------------------------------------------------------------------

    def run(self) -> None:
        while True:
            readable, _ = poll([self.control, self.procs], timeout=0.1)
            if self.procs in readable:
                while (frames := self.procs.recv(block=False)) is not None:
                    self.on_process_message(frames[0], json.loads(frames[-1]))
            if self.control in readable:
                while (frames := self.control.recv(block=False)) is not None:
                    self.on_request(frames[0], json.loads(frames[-1]))
            self.check_children()
            self.answer_waiters()
            if (
                self.instances
                and all(i.done for i in self.instances.values())
                and (self.started or self.failure or self.stopping)
            ):
                break
            if not self.instances and self.stopping:
                break
            if not self.spawned and time.time() - self.began > SPAWN_DEADLINE:
                log.error("nobody asked to spawn within %gs; exiting", SPAWN_DEADLINE)
                break
        self.write_final()

    def write_final(self) -> None:
        final = self.status()
        tmp = self.run_dir / "final.json.tmp"
        tmp.write_text(json.dumps(final))
        tmp.replace(self.run_dir / "final.json")
        log.info("all local instances done (%s); supervisor exits", final["state"])
        # Answer anything still asking before leaving.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            readable, _ = poll([self.control], timeout=0.1)
            if self.control in readable:
                while (frames := self.control.recv(block=False)) is not None:
                    self.control.send_json(final, prefix=[frames[0], b""])


# What a process's own report fills in a status row.
_REPORTED = (
    "received",
    "emitted",
    "errors",
    "anomalies",
    "backlog",
    "blocked_seconds",
    "rate",
    "uptime",
)


def instance_row(component: str, index: int, host: str, state: str) -> dict[str, Any]:
    """One instance in ``status`` (the documented ``--json`` row), before any report."""
    return {
        "component": component,
        "index": index,
        "host": host,
        "pid": None,
        "state": state,
        "endpoint": None,
        "received": 0,
        "emitted": 0,
        "errors": 0,
        "anomalies": {},
        "backlog": 0,
        "blocked_seconds": 0.0,
        "rate": 0.0,
        "restarts": 0,
        "lost": 0,
        "uptime": 0.0,
        "last_error": None,
    }


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


def topology_marker(name: str) -> list[str]:
    """Arguments every process of topology ``name`` carries, so that a sweep after pid
    reuse can never hit another topology's processes (and ``ps`` shows whose it is)."""
    return ["--topology", name]


def sweep(session: int, topology: str) -> int:
    """Kill every process of ``topology`` left in a supervisor's session; how many."""
    killed = 0
    marker = "\0".join(topology_marker(topology)).encode() + b"\0"
    for pid in session_members(session, marker):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def _daemonize_and_run(spec: dict[str, Any]) -> int:
    # `~` in a host's workdir means that host's home: expanded here, on the host.
    for key in ("run_dir", "code_dir"):
        spec[key] = os.path.expanduser(spec[key])
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "final.json").unlink(missing_ok=True)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        # The starter: relay the child's readiness line (or its failure) and return.
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            line = pipe.read().decode().strip()
        if not line:
            sys.stderr.write(_tail(run_dir / "supervisor.log", 30) + "\n")
            return 1
        sys.stdout.write(line + "\n")
        return 0
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    logfd = os.open(run_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [supervisor {spec['host']}] %(message)s",
    )
    sup: Supervisor | None = None
    try:
        sup = Supervisor(spec)
        ready = {
            "control": sup.control.endpoint,
            "pid": os.getpid(),
            "run_dir": spec["run_dir"],
            "code_dir": spec["code_dir"],
        }
        os.write(write_fd, (json.dumps(ready) + "\n").encode())
        os.close(write_fd)
        sup.run()
        sup.transport.close(linger_ms=0)
    except Exception:
        log.exception("supervisor failed")
        if sup is not None:
            sup.kill_all()
        os._exit(1)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--sweep"]:
        print(sweep(int(args[1]), args[2]))
        return 0
    spec = json.loads(sys.stdin.read())
    return _daemonize_and_run(spec)


if __name__ == "__main__":
    sys.exit(main())

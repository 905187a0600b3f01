"""Starting, querying and stopping a topology across its hosts (the CLI's engine).

``up`` runs in steps, every host in parallel where it can: connect → ship ``code`` →
start the supervisor (which is also the check of the host's interpreter and its
clusterduck version: one remote interpreter start-up per host) → spawn every process →
wire them together → start the spouts. A failure at any step tears down everything started on
every host before the error reaches the caller. Nothing here prints: progress goes to a
callback, errors are raised.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__, deploy_slurm
from .exceptions import (
    ClusterduckError,
    ControlTimeout,
    LaunchError,
    ProtocolError,
    RemotePythonError,
    StartFailed,
    StateError,
)
from .gaps import gap_problems
from .launch.base import HostConnection
from .launch.local import LocalHost
from .launch.slurm import SlurmGroup
from .parallel import in_parallel
from .protocol import (
    LOCALHOST,
    MAX_KEPT_RUNS,
    ComponentStatus,
    ControlRequest,
    CurveKeys,
    HostStatus,
    InstanceStatus,
    Op,
    RunLayout,
    State,
    StepReply,
    SupervisorReady,
    SupervisorSpec,
    TopologySpec,
    TopologyStatus,
    VersionMismatch,
    Wiring,
    decode_json,
    decode_ready,
    same_release,
    topology_marker,
)
from .runtime.procfs import pid_alive, sweep
from .runtime.transport import Requester, generate_curve_keys
from .state import HostRecord, TopologyRecord, clusterduck_home, load_all

if TYPE_CHECKING:
    from .loader import TopologyFile
    from .prestart import EarlySupervisor
    from .topology import Host, Topology

T = TypeVar("T")

__all__ = ["Progress", "Cluster", "refuse_running", "release", "start", "topology_status"]

Progress = Callable[[str, str, str], None]  # (host, step, detail)

START_TIMEOUT = 60.0
LOCAL_REQUEST_TIMEOUT = 3.0
REMOTE_REQUEST_TIMEOUT = 5.0
# `status` and `down` call a remote host "unreachable" when its supervisor's control port
# accepts no TCP connection within this time; the other hosts' rows do not wait for it
# (documented in the README, "Many machines").
UNREACHABLE_AFTER = 2.5
# While hosts start in parallel, the record (every host, the keys) is written at most
# this often: writing it after each host's start cost O(hosts²) CPU (issue 12); it is
# written once more when every supervisor is up.
SAVE_EVERY = 0.5
# How long `down` waits for a drained or killed supervisor to write its final.json and
# exit before it sweeps that host (over SSH for a remote one).
GONE_AFTER = 5.0
# How long `up --wait` waits for the supervisors of a finished topology to exit. Once a
# topology finished everything its processes sent was read, so they exit at once; only a
# reader outside the topology that stopped reading (runtime/supervisor.py, EXIT_GRACE)
# keeps one longer, and `up --wait` then says which host and how to end it.
RELEASE_WITHIN = 10.0
# How long the `leave` request waits for its (unused) reply.
LEAVE_TIMEOUT = 0.2
# A host whose supervisor died without a final status (a kill -9): its processes died
# with it (runtime/forkserver.die_with_supervisor), and what they counted since the last
# report is lost with them.
_GONE = "supervisor is gone, and its processes with it (their counts are lost)"


def instance_names(topo: Topology) -> list[str]:
    """Every ``component/index`` of the topology: each gets a CURVE keypair of its own."""
    return [f"{c}/{i}" for c, i, _ in TopologySpec.from_topology(topo).instances()]


def host_keys(record: TopologyRecord, host: str) -> CurveKeys | None:
    """The keys a host's supervisor gets: the topology's, every instance's public key,
    and the secret keys of the instances placed on that host only."""
    keys = CurveKeys.from_dict(record.curve)
    return keys.for_host(record.spec, host) if keys is not None else None


def _no_progress(host: str, step: str, detail: str = "") -> None:
    pass


def open_connection(
    name: str, host: Host | None, *, accept_new_host_keys: bool = False, remote: bool = True
) -> HostConnection:
    if not remote:
        return LocalHost()
    if host is not None and host.slurm is not None:
        return SlurmGroup(name.split("#")[0], host)
    from .launch.ssh import SSHHost  # paramiko is imported only when a host is remote
    from .topology import Host

    return SSHHost(name, host or Host(), accept_new_host_keys=accept_new_host_keys)


class Cluster:
    """The hosts of one topology record, reachable for control and cleanup."""

    def __init__(self, record: TopologyRecord, *, accept_new_host_keys: bool = False) -> None:
        self.record = record
        self.curve = CurveKeys.from_dict(record.curve)
        self.accept_new_host_keys = accept_new_host_keys
        self._conns: dict[str, HostConnection] = {}
        # Filled by host_status: hosts nothing reaches, and the final status of hosts
        # whose supervisor has ended (it sweeps its own session before it exits). An
        # ended host is not asked again, and `down` needs no SSH for either.
        self.unreachable: set[str] = set()
        self.ended: dict[str, HostStatus] = {}
        # Hosts whose drained supervisor `down` let exit (it swept its own session).
        self.released: set[str] = set()
        # One control connection per supervisor, kept for the next request (`up` makes
        # three per host, `down` more): a new one is a CURVE handshake on both sides.
        self.requester = Requester(self.curve)

    def conn(self, host: str) -> HostConnection:
        if host not in self._conns:
            rec = self.record.hosts[host]
            self._conns[host] = open_connection(
                host,
                _host_model(rec.connect) if rec.remote else None,
                remote=rec.remote,
                accept_new_host_keys=self.accept_new_host_keys,
            )
        return self._conns[host]

    def request(
        self, host: str, message: ControlRequest, timeout: float | None = None
    ) -> dict[str, Any]:
        """One control request to ``host``'s supervisor; its raw JSON answer."""
        rec = self.record.hosts[host]
        if timeout is None:
            timeout = REMOTE_REQUEST_TIMEOUT if rec.remote else LOCAL_REQUEST_TIMEOUT
        return self.requester.request(rec.control, message.to_dict(), timeout=timeout)

    def each(self, fn: Callable[[str], T]) -> dict[str, T | Exception]:
        """``fn(host)`` for every host with a supervisor, in parallel (see in_parallel)."""
        hosts = [h for h, r in self.record.hosts.items() if r.control or r.slurm]
        return in_parallel(hosts, fn)

    # -- status ----------------------------------------------------------------------

    def host_status(self, host: str) -> HostStatus:
        """One host's status; an unreachable host answers within UNREACHABLE_AFTER."""
        rec = self.record.hosts[host]
        if host in self.ended:
            return self.ended[host]
        self.unreachable.discard(host)
        if not rec.remote and not pid_alive(rec.pid):
            return self._ended(self._final_or_lost(host, _GONE))
        if rec.slurm:  # Slurm: a job the scheduler ended answers from its verdict
            ended = deploy_slurm.ended_status(self, host)
            if ended is not None:
                return ended
            if not rec.control:  # queued when `up` failed or was interrupted
                return HostStatus(host, State.STARTING, None)
        if rec.remote:
            # One TCP connect tells the cases apart at once: accepted (the supervisor
            # listens), refused (the host is up, the supervisor gone: read its final
            # status over SSH), or nothing (unreachable: no SSH attempt, no long wait).
            reach = probe(rec.control, UNREACHABLE_AFTER)
            if reach == "unreachable":
                self.unreachable.add(host)
                why = f"{rec.control} did not answer within {UNREACHABLE_AFTER:g}s"
                return HostStatus(host, State.UNREACHABLE, rec.pid, why)
            if reach == "closed":
                return self._ended(self._final_or_lost(host, _GONE))
        try:
            return self._ended(HostStatus.from_dict(self.request(host, ControlRequest(Op.STATUS))))
        except ControlTimeout:
            return self._ended(self._final_or_lost(host, "supervisor does not answer"))

    def _ended(self, status: HostStatus) -> HostStatus:
        if status.state.ended:
            self.ended[status.host] = status
        return status

    def _final_or_lost(self, host: str, why: str) -> HostStatus:
        rec = self.record.hosts[host]
        try:
            data = self.conn(host).read_file(RunLayout(rec.run_dir).final_status)
        except ClusterduckError:
            data = None
        if data:
            try:
                return HostStatus.from_dict(decode_json(data))
            except ProtocolError as exc:
                why = f"{why}; its final status is unreadable ({exc})"
        return HostStatus(host, State.UNREACHABLE, rec.pid, why)

    def status(self) -> TopologyStatus:
        """The whole topology now, every host asked in parallel (``status --json``)."""
        spec = self.record.spec
        per_host = self.each(self.host_status)
        by_instance: dict[tuple[str, int], InstanceStatus] = {}
        host_states: dict[str, State] = {}
        problems: list[str] = []
        rejected: dict[str, int] = {}
        for host, result in per_host.items():
            if isinstance(result, Exception):
                result = HostStatus(host, State.UNREACHABLE, None, str(result))
            host_states[host] = result.state
            for kind, n in result.rejected_frames.items():
                rejected[kind] = rejected.get(kind, 0) + n
            if result.failure:
                problems.append(f"{host}: {result.failure}")
            for row in result.instances:
                by_instance[(row.component, row.index)] = row
        components = []
        for comp in spec.components:
            rows = []
            for i in range(comp.parallelism):
                host = comp.host_of(i)
                gone = host_states.get(self.record.holder(comp.name, i))
                row = by_instance.get((comp.name, i)) or InstanceStatus(
                    comp.name,
                    i,
                    host,
                    gone if gone in (State.UNREACHABLE, State.FAILED) else State.STARTING,
                )
                rows.append(row)
            components.append(ComponentStatus(comp.name, comp.kind, tuple(rows)))
        problems += gap_problems(spec, components)
        return TopologyStatus(
            name=self.record.name,
            state=_overall(host_states, State.parse(self.record.status)),
            hosts=host_states,
            problems=tuple(problems),
            components=settle_in_flight(components),
            slurm=deploy_slurm.jobs(self),
            rejected_frames=rejected,
            guarantee=spec.guarantee,
        )

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float, *, force: bool = False) -> TopologyStatus:
        """Graceful drain (unless force), then kill what is left and sweep every host."""
        final: TopologyStatus | None = None
        if not force:
            self.each(self._ask_stop)
            deadline = time.monotonic() + timeout
            pause = 0.05  # a small topology drains in a fraction of a second: look soon
            while time.monotonic() < deadline:
                final = self.status()
                # Done when no host still runs anything that could drain: an unreachable
                # host or a lost supervisor cannot drain, waiting would only cost time.
                if all(s.ended or s is State.UNREACHABLE for s in final.hosts.values()):
                    break
                time.sleep(pause)
                pause = min(0.5, pause * 1.5)
        if final is None:
            final = self.status()
        else:
            # Each host that drained: let its supervisor write its final.json and exit,
            # as `up --wait` does; the kill below then only finds what should not be
            # there. (Swept at once, a supervisor was killed while it wrote final.json or
            # waited for its processes' last frames to leave.)
            drained = [host for host, state in final.hosts.items() if state.ended]
            gone = in_parallel(drained, lambda host: self._release(host, GONE_AFTER))
            self.released.update(host for host, left in gone.items() if left is True)
        self.each(self._kill_host)
        self.record.drop_keys()  # nothing is left that needs them
        return final

    def down(self, timeout: float, *, force: bool = False) -> TopologyStatus:
        """``stop``, then record how the topology ended: ``failed``, ``finished``, or
        ``stopped`` when it was still running."""
        final = self.stop(timeout, force=force)
        record = self.record
        # Rows still running when the kill came keep their last report's state: say that
        # they were killed, or a stopped topology reads as if parts of it still ran.
        killed = [
            f"{row.component}/{row.index} ({row.state.value})"
            for row in final.instances()
            if not row.state.ended and row.state is not State.UNREACHABLE
        ]
        if killed:
            how = "with --force" if force else f"after the {timeout:g} s drain timeout"
            final = final.replace(problems=(*final.problems, f"killed {how}: {_capped(killed)}"))
        if final.state is State.FAILED:
            record.status = State.FAILED.value
        elif record.status != State.FINISHED.value:  # still running: `down` stopped it
            record.status = State.STOPPED.value
        final = final.replace(state=State(record.status))
        record.final = final.to_dict()
        record.save()
        return final

    def settle(self, status: TopologyStatus) -> TopologyStatus:
        """Record an ended status as the record's final one (once); returns it."""
        record = self.record
        if status.state in (State.FINISHED, State.FAILED) and record.active:
            record.status = status.state.value
            record.final = status.to_dict()
            record.save()
        return status

    def _ask_stop(self, host: str) -> None:
        rec = self.record.hosts[host]
        if not rec.control:
            return  # a Slurm group still queued: cancelling the job stops it
        if rec.remote and probe(rec.control, UNREACHABLE_AFTER) != "open":
            return  # unreachable or already gone: status says which
        if rec.remote or pid_alive(rec.pid):
            try:
                self.request(host, ControlRequest(Op.STOP))
            except ClusterduckError:
                pass  # status will show the host unreachable; kill still sweeps it

    def _kill_host(self, host: str) -> None:
        """Kill what runs on ``host``; SSH only when its supervisor could not do it."""
        rec = self.record.hosts[host]
        swept = host in self.released
        if rec.control and not swept and host not in self.unreachable and host not in self.ended:
            if rec.remote or pid_alive(rec.pid):
                try:
                    # The supervisor kills its processes and sweeps its session.
                    swept = _swept(self.request(host, ControlRequest(Op.KILL), timeout=2.0))
                except ClusterduckError:
                    pass
        if rec.slurm:  # Slurm takes back the job and every process in it
            deploy_slurm.cancel(self, host)
            return
        if not rec.remote:
            if swept:  # it killed its processes; it writes final.json on its way out
                self._release(host, GONE_AFTER)
            sweep(rec.pid, self.record.name)
            if rec.ipc_dir:  # the supervisor removes it, unless it was killed
                shutil.rmtree(rec.ipc_dir, ignore_errors=True)
            return
        if host in self.unreachable:
            return  # what no TCP connect reaches, SSH does not reach either
        if (swept or host in self.ended) and self._release(host, GONE_AFTER):
            return  # it swept its session and exited: nothing left on that host
        try:
            self.conn(host).run(
                [
                    rec.python,
                    "-m",
                    "clusterduck.runtime.supervisor",
                    "--sweep",
                    str(rec.pid),
                    self.record.name,
                ],
                timeout=20,
            )
        except ClusterduckError:
            pass

    def release(self, within: float) -> list[str]:
        """Once the topology has ended: tell every supervisor it may exit now (it
        lingers to answer late requests otherwise) and wait until it has, so that
        ``up --wait`` returns with nothing of the topology running, as ``down`` does.
        Returns the hosts whose supervisor is still there after ``within``."""
        done = self.each(lambda host: self._release(host, within))
        return sorted(host for host, gone in done.items() if gone is False)

    def _release(self, host: str, within: float) -> bool:
        rec = self.record.hosts[host]
        if not rec.control or host in self.unreachable:
            return True
        # Gone already? (A request to an endpoint nobody listens on waits its timeout.)
        if rec.remote:
            there = probe(rec.control, UNREACHABLE_AFTER) == "open"
        else:
            there = pid_alive(rec.pid)
        if not there:
            return True
        try:
            # The reply is not needed (the wait below is what counts), and one that
            # exits between the check above and this request never answers.
            self.request(host, ControlRequest(Op.LEAVE), timeout=LEAVE_TIMEOUT)
        except ClusterduckError:
            pass  # gone already, or it will go by itself: wait all the same
        if rec.remote:
            return _gone(rec.control, within)
        return _exited(rec.pid, within)

    def close(self) -> None:
        self.requester.close()
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


# A problem line names at most this many instances: `down --force` of a wide topology
# named every one of hundreds, in `status` and on stderr.
NAMED_AT_MOST = 8


def _capped(names: list[str]) -> str:
    """``a, b, c`` — or the first NAMED_AT_MOST and ``and N more``."""
    if len(names) <= NAMED_AT_MOST:
        return ", ".join(names)
    return f"{', '.join(names[:NAMED_AT_MOST])} and {len(names) - NAMED_AT_MOST} more"


def _swept(reply: dict[str, Any]) -> bool:
    """Whether a supervisor's answer to ``kill`` says its session is swept: a kill reply
    saying so, or its final status (it sweeps before writing that, then lingers)."""
    try:
        return StepReply.from_dict(reply).swept is not None
    except ProtocolError:
        pass
    try:
        return HostStatus.from_dict(reply).state.ended
    except ProtocolError:
        return False


def _gone(control: str, within: float) -> bool:
    """Wait until a supervisor told to end has closed its control port (it exits right
    after), so `down` returns with nothing left; False when it is still there."""
    return _until_not(lambda: probe(control, 1.0) == "open", within, 0.05)


def _exited(pid: int | None, within: float) -> bool:
    """Wait until a local process has exited (a zombie counts as gone); False at the
    deadline."""
    return _until_not(lambda: pid_alive(pid), within, 0.01)


def _until_not(there: Callable[[], bool], within: float, pause: float) -> bool:
    """Poll ``there`` every ``pause`` until it is False (True) or ``within`` ends
    (False)."""
    deadline = time.monotonic() + within
    while there():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


def probe(endpoint: str, timeout: float) -> str:
    """``open``, ``closed`` (refused: the host is up, nothing listens) or ``unreachable``
    for a ``tcp://address:port`` control endpoint: one TCP connect, closed at once."""
    address, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((address.strip("[]"), int(port)), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "closed"
    except (OSError, ValueError):
        return "unreachable"


def _overall(host_states: dict[str, State], recorded: State) -> State:
    states = set(host_states.values())
    if not states:
        return recorded
    if State.UNREACHABLE in states:
        return State.BROKEN if recorded.active else recorded
    if states <= {State.FINISHED}:
        return State.FINISHED
    if State.FAILED in states:
        return State.FAILED if states <= {State.FINISHED, State.FAILED} else State.FAILING
    if recorded is State.STOPPED:
        return State.STOPPED
    return State.RUNNING if State.RUNNING in states else next(iter(states))


def _host_model(connect: dict[str, Any]) -> Host:
    """The pydantic Host of a remote host record (only SSH needs it)."""
    from .topology import Host

    return Host(**connect)


# -- up -------------------------------------------------------------------------------


def refuse_running(name: str) -> None:
    """StateError when a topology of that name runs (``up`` checks before it shows any
    progress, and again in ``start``)."""
    for rec in load_all():
        if rec.name == name and rec.active:
            state = topology_status(rec).state
            if not (state.ended or state is State.BROKEN):
                raise StateError(
                    f"topology {name!r} is already running (started from {rec.file}); "
                    f"stop it first with `clusterduck down {name}`"
                )


def start(
    tf: TopologyFile,
    *,
    progress: Progress = _no_progress,
    accept_new_host_keys: bool = False,
    collector: str | None = None,
    curve: CurveKeys | None = None,
    wait_for_allocation: float | None = None,
    early: EarlySupervisor | None = None,
    checked: bool = False,
) -> TopologyRecord:
    """Start every process of the topology; on any failure nothing stays running.

    ``early``: this machine's supervisor interpreter, already started (prestart.py).
    ``checked``: the caller ran :func:`refuse_running` just before (each check asks a
    running record's hosts for their status: seconds for an unreachable one)."""
    topo = tf.topology
    if not checked:
        refuse_running(topo.name)
    previous = next((r for r in load_all() if r.name == topo.name), None)
    past_runs: dict[str, dict[str, str]] = {}
    run = 1
    if previous is not None:
        past_runs = dict(previous.past_runs)
        if previous.run_dirs():
            past_runs[str(previous.run)] = previous.run_dirs()
        run = previous.run + 1
        kept = sorted(past_runs, key=int)[-MAX_KEPT_RUNS:]
        past_runs = {r: past_runs[r] for r in kept}
    record = TopologyRecord(
        run=run,
        past_runs=past_runs,
        name=topo.name,
        file=str(tf.path),
        code_dir=str(tf.code_dir),
        topology=topo.model_dump(mode="json"),
        runtime=TopologySpec.from_topology(topo).to_dict(),
        curve=(curve or generate_curve_keys(instance_names(topo))).to_dict()
        if topo.uses_curve
        else None,
    )
    home = clusterduck_home()
    conns: dict[str, HostConnection] = {}
    for name in topo.hosts_used():
        remote = topo.is_remote(name)
        host = topo.host(name)
        record.hosts[name] = HostRecord(
            name=name,
            remote=remote,
            connect=host.model_dump(mode="json"),
            python=host.python if remote else sys.executable,
        )
        conns[name] = open_connection(
            name, host, remote=remote, accept_new_host_keys=accept_new_host_keys
        )
    record.forget()
    record.save()
    cluster = Cluster(record, accept_new_host_keys=accept_new_host_keys)
    cluster._conns = conns
    try:
        # A Slurm group whose nodes are all this machine is no reason to leave loopback.
        remote_hosts = [
            h
            for h in topo.hosts_used()
            if topo.is_remote(h) and not deploy_slurm.on_this_machine(conns[h])
        ]
        _prepare_hosts(
            tf, record, conns, home, bool(remote_hosts), progress, wait_for_allocation, early
        )
        _spawn_and_wire(cluster, collector, progress)
    except BaseException as exc:
        cluster.each(cluster._kill_host)
        _record_unfinished_start(cluster, exc)
        cluster.close()
        raise
    record.status = State.RUNNING.value
    record.save()
    cluster.close()
    return record


def _record_unfinished_start(cluster: Cluster, exc: BaseException) -> None:
    """Keep how a start that did not complete ended as the record's final status:
    ``stopped`` when interrupted (Ctrl-C), else ``failed`` with the error among its
    problems. Without it ``status`` asked the killed supervisors and showed their
    instances ``unreachable`` (their supervisor is gone), and Ctrl-C read as a
    failure. What never ran shows the topology's state, not its host's last word."""
    record = cluster.record
    state = State.STOPPED if isinstance(exc, KeyboardInterrupt) else State.FAILED
    record.status = state.value
    # This machine's supervisor was just killed: read what it left, never ask it. One
    # still exiting answers nothing, so `up` waited LOCAL_REQUEST_TIMEOUT for it and
    # kept "supervisor does not answer" (or "... is gone") among the problems.
    try:
        for host, rec in record.hosts.items():
            if not rec.remote and rec.control and host not in cluster.ended:
                cluster.ended[host] = cluster._final_or_lost(host, "")
        final = cluster.status()
    except Exception:  # noqa: BLE001 - the record still says how it ended
        final = None
    if final is not None:
        problem = "interrupted while starting" if state is State.STOPPED else str(exc)
        components = tuple(
            comp.replace(
                instances=tuple(
                    row if row.state.ended else row.replace(state=state) for row in comp.instances
                ),
            )
            for comp in final.components
        )
        hosts = {h: s if s.ended else state for h, s in final.hosts.items()}
        final = final.replace(
            state=state,
            hosts=hosts,
            problems=(*final.problems, problem or type(exc).__name__),
            components=components,
        )
        record.final = final.to_dict()
    record.save()


def _prepare_hosts(
    tf: TopologyFile,
    record: TopologyRecord,
    conns: dict[str, HostConnection],
    home: Path,
    multi_host: bool,
    progress: Progress,
    wait_for_allocation: float | None = None,
    early: EarlySupervisor | None = None,
) -> None:
    topo = tf.topology
    local_address = topo.host(LOCALHOST).address
    saving = threading.Lock()
    saved = [time.monotonic()]

    def save_soon() -> None:
        """Save unless the record was saved within SAVE_EVERY (a later host's save, or
        the one after the last host, writes this one's start too)."""
        with saving:
            if time.monotonic() - saved[0] < SAVE_EVERY:
                return
            saved[0] = time.monotonic()
        record.save()

    def local_addresses() -> tuple[str, str]:
        """(bind, advertise) of this machine's sockets."""
        if not multi_host:
            return "127.0.0.1", "127.0.0.1"
        return "0.0.0.0", local_address or _local_address_towards(record, conns)

    def prepare(name: str) -> None:
        rec = record.hosts[name]
        conn = conns[name]
        if topo.is_slurm(name):
            assert isinstance(conn, SlurmGroup)
            bind, advertise = local_addresses()
            deploy_slurm.start_group(
                name,
                tf,
                record,
                conn,
                bind_host=bind,
                advertise=advertise,
                wait=wait_for_allocation,
                progress=progress,
                check_python=lambda: _check_python(name, conn, rec.python),
            )
            return
        if rec.remote:
            progress(name, "connect", "")
            conn.connect()
            workdir = topo.host(name).workdir.rstrip("/")
            code_dir = f"{workdir}/code/{topo.name}"
            run_dir = RunLayout.of_run(workdir, topo.name, record.run).run_dir
            progress(name, "ship", str(tf.code_dir))
            shipped = conn.ship(tf.code_dir, code_dir)
            progress(name, "ship", f"{len(shipped.sent)} sent, {shipped.unchanged} unchanged")
            progress(name, "check", rec.python)  # done by the supervisor's own start
            advertise = getattr(conn, "resolved_address", None) or topo.host(name).address or name
            bind_host = "0.0.0.0"
        else:
            code_dir = str(tf.code_dir)
            run_dir = RunLayout.of_run(str(home), topo.name, record.run).run_dir
            bind_host, advertise = local_addresses()
        progress(name, "start", "supervisor")
        spec = SupervisorSpec(
            topology=record.spec,
            host=name,
            code_dir=code_dir,
            run_dir=run_dir,
            bind_host=bind_host,
            advertise=advertise,
            curve=host_keys(record, name),
            env=topo.host(name).env,
            expect_version=__version__,
            private=topo.uses_private_ipc,
        )
        ready = _start_supervisor(name, conn, rec.python, spec, None if rec.remote else early)
        rec.control, rec.pid = ready.control, ready.pid
        rec.run_dir = ready.run_dir  # absolute: `~` expanded on that host
        rec.ipc_dir = ready.ipc_dir or ""
        save_soon()
        _check_ready_version(name, rec.python, ready)  # after save: a failure tears it down

    # Slurm groups first: their queue wait must not run out other supervisors' patience.
    names = list(record.hosts)  # a group adds "<group>#<rank>" records as it starts
    slurm = [h for h in names if topo.is_slurm(h)]
    deploy_slurm.start_groups(slurm, prepare, conns)
    try:
        results = in_parallel([h for h in names if h not in slurm], prepare)
        # A remote host's own error first: this machine's start fails too when that
        # host's address does not resolve (no route to guess an address from), and its
        # error blamed localhost with a hint to set hosts.localhost.address.
        remote_first = sorted(results, key=lambda h: not record.hosts[h].remote)
        raise_first_error({h: results[h] for h in remote_first})
    finally:
        record.save()  # every supervisor that started, also when another one failed


def _spawn_and_wire(cluster: Cluster, collector: str | None, progress: Progress) -> None:
    record = cluster.record

    def step(message: ControlRequest) -> dict[str, StepReply]:
        def one(host: str) -> StepReply:
            progress(host, message.op.value, "")
            reply = StepReply.from_dict(cluster.request(host, message, timeout=START_TIMEOUT + 5))
            if not reply.ok:
                raise StartFailed(
                    host,
                    f"{reply.component}: {reply.error}",
                    component=reply.component,
                    log_tail=reply.log_tail,
                )
            return reply

        return raise_first_error(cluster.each(one))

    endpoints: dict[str, dict[str, str]] = {}
    for reply in step(ControlRequest(Op.SPAWN, timeout=START_TIMEOUT)).values():
        endpoints.update({k: dict(v) for k, v in (reply.endpoints or {}).items()})
    supervisors = tuple(r.control for r in record.hosts.values())
    wiring = Wiring(endpoints, collector)
    step(ControlRequest(Op.WIRE, timeout=START_TIMEOUT, wiring=wiring, supervisors=supervisors))
    step(ControlRequest(Op.START, timeout=START_TIMEOUT))
    for host in record.hosts:
        progress(host, "ready", "")


_MISSING_MODULE = re.compile(r"No module named '?([A-Za-z_][\w.]*)'?")


def _python_fix(host: str, python: str) -> str:
    return (
        f"install it there (`{python} -m pip install clusterduck=={__version__}`) or point "
        f"hosts.{host}.python at an interpreter that has it"
    )


def _start_supervisor(
    host: str,
    conn: HostConnection,
    python: str,
    spec: SupervisorSpec,
    early: EarlySupervisor | None = None,
) -> SupervisorReady:
    """Start the host's supervisor: ONE remote command, which also checks the interpreter.

    The starter compares versions before it detaches and answers a typed
    ``VersionMismatch``; an interpreter that is missing (exit 126/127) or lacks
    clusterduck or zmq shows in the exit status and stderr. Each is a RemotePythonError
    naming host, interpreter and the fix."""
    fix = _python_fix(host, python)
    argv = [python, "-m", "clusterduck.runtime.supervisor", *topology_marker(spec.topology.name)]
    stdin = json.dumps(spec.to_dict()).encode()
    local = conn if isinstance(conn, LocalHost) else None
    started = early.take(argv) if early is not None and local is not None else None
    if local is not None and started is not None:  # the same command, started early
        result = local.finish(started, argv, stdin=stdin, timeout=START_TIMEOUT)
    else:
        result = conn.run(argv, stdin=stdin, timeout=START_TIMEOUT)
    lines = result.stdout.strip().splitlines()
    ready: SupervisorReady | VersionMismatch | None = None
    if lines:
        try:
            ready = decode_ready(lines[-1])
        except ProtocolError:
            ready = None
    if isinstance(ready, VersionMismatch):
        raise RemotePythonError(
            host,
            f"{python} (Python {ready.python}) has clusterduck {ready.clusterduck}, this "
            f"machine has {spec.expect_version}: versions must match in major.minor",
            fix,
            python=python,
        )
    if result.returncode in (126, 127):
        raise RemotePythonError(
            host,
            f"interpreter {python!r} did not run: {result.stderr.strip()[-500:]}",
            fix,
            python=python,
        )
    missing = _MISSING_MODULE.search(result.stderr)
    module = missing.group(1).split(".")[0] if missing else ""
    if result.returncode != 0 and missing and module in ("clusterduck", "zmq"):
        raise RemotePythonError(
            host, f"{python} cannot import {module} ({missing.group(0)})", fix, python=python
        )
    if result.returncode != 0 or not isinstance(ready, SupervisorReady):
        raise StartFailed(
            host,
            "the supervisor did not start",
            log_tail=(result.stderr or result.stdout)[-3000:],
            hint="see the log lines above; run `clusterduck logs` for more",
        )
    return ready


def _check_ready_version(host: str, python: str, ready: SupervisorReady) -> None:
    """A supervisor too old to check ``expect_version`` still says its version."""
    if not same_release(ready.clusterduck, __version__):
        raise RemotePythonError(
            host,
            f"{python} has clusterduck {ready.clusterduck}, this machine has {__version__}: "
            "versions must match in major.minor",
            _python_fix(host, python),
            python=python,
        )


def _check_python(host: str, conn: HostConnection, python: str) -> None:
    """A separate interpreter probe, for a launcher whose supervisor start cannot double
    as the check (``up`` over SSH uses ``_start_supervisor`` instead)."""
    probe = (
        "import json, sys\n"
        "found = {'python': sys.version.split()[0]}\n"
        "for mod in ('clusterduck', 'zmq'):\n"
        "    try:\n"
        "        m = __import__(mod); found[mod] = getattr(m, '__version__', '?')\n"
        "    except Exception as e:\n"
        "        found[mod] = None; found[mod + '_error'] = repr(e)\n"
        "print(json.dumps(found))\n"
    )
    fix = (
        f"install it there (`{python} -m pip install clusterduck=={__version__}`) or point "
        f"hosts.{host}.python at an interpreter that has it"
    )
    result = conn.run([python, "-c", probe], timeout=30)
    if result.returncode != 0:
        raise RemotePythonError(
            host,
            f"interpreter {python!r} did not run: {result.stderr.strip()[-500:]}",
            fix,
            python=python,
        )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if not found.get("clusterduck"):
        raise RemotePythonError(
            host,
            f"{python} (Python {found['python']}) cannot import clusterduck "
            f"({found.get('clusterduck_error')})",
            fix,
            python=python,
        )
    if not found.get("zmq"):
        raise RemotePythonError(host, f"{python} cannot import zmq", fix, python=python)
    if found["clusterduck"].split(".")[:2] != __version__.split(".")[:2]:
        raise RemotePythonError(
            host,
            f"{python} has clusterduck {found['clusterduck']}, this machine has "
            f"{__version__}: versions must match in major.minor",
            fix,
            python=python,
        )


def _local_address_towards(record: TopologyRecord, conns: dict[str, HostConnection]) -> str:
    """The address of this machine on the route to the first remote host.

    It runs beside the remote hosts' own start, so a remote address that does not
    resolve is named here too: otherwise this error would hide the real one."""
    failures = []
    for name, rec in record.hosts.items():
        if rec.remote:
            target = getattr(conns[name], "resolved_address", None) or name
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect((target, 9))
                    address: str = s.getsockname()[0]
                    return address
            except OSError as exc:
                failures.append(f"host {name!r} ({target}): {exc.strerror or exc}")
                continue
    why = f" ({'; '.join(failures)})" if failures else ""
    raise LaunchError(
        LOCALHOST,
        f"cannot tell which address remote hosts should use to reach this machine{why}",
        "check the remote hosts' addresses, or set hosts.localhost.address in the topology file",
    )


def settle_in_flight(components: list[ComponentStatus]) -> tuple[ComponentStatus, ...]:
    """Nothing is in flight towards a finished instance: zero those edges.

    A sender counts a message in flight until the receiver's credit grant for it comes
    back, and a sender that ends stops reading grants: its last report kept thousands
    "in flight" to receivers that had long processed them (a finished wordcount showed
    ``split 0 finished … in flight 2,174``). A finished instance has had the end of
    stream of every upstream instance, which travels behind their data on the same
    connection, and drained its queue; so whatever any sender still counts towards it
    was processed. Its row keeps the rest (edges to instances still running)."""
    finished = {
        f"{comp.name}/{row.index}"
        for comp in components
        for row in comp.instances
        if row.state is State.FINISHED
    }
    settled = []
    for comp in components:
        rows = []
        for row in comp.instances:
            if any(e.to in finished and (e.in_flight or e.queue_ms) for e in row.edges):
                stale = sum(e.in_flight for e in row.edges if e.to in finished)
                edges = tuple(
                    e.replace(in_flight=0, queue_ms=0.0) if e.to in finished else e
                    for e in row.edges
                )
                row = row.replace(edges=edges, in_flight=max(0, row.in_flight - stale))
            rows.append(row)
        settled.append(comp.replace(instances=tuple(rows)))
    return tuple(settled)


def raise_first_error(results: dict[str, T | Exception]) -> dict[str, T]:
    done: dict[str, T] = {}
    for key, result in results.items():
        if isinstance(result, Exception):
            raise result
        done[key] = result
    return done


def topology_status(record: TopologyRecord) -> TopologyStatus:
    """Status of a record (``status --json`` is its ``to_dict()``); an ended topology
    answers from its saved final status."""
    if not record.active and record.final is not None:
        final = TopologyStatus.from_dict(record.final)
        if final.slurm:  # the job's state now, not when it ended
            cluster = Cluster(record)
            try:
                final = final.replace(slurm=deploy_slurm.jobs(cluster))
            finally:
                cluster.close()
        return final
    cluster = Cluster(record)
    try:
        return cluster.settle(cluster.status())
    finally:
        cluster.close()


def release(record: TopologyRecord, within: float = RELEASE_WITHIN) -> list[str]:
    """A finished topology's supervisors exit now, and this returns once they have;
    the hosts whose supervisor is still there after ``within``."""
    cluster = Cluster(record)
    try:
        return cluster.release(within)
    finally:
        cluster.close()


def stop_topology(record: TopologyRecord, timeout: float, *, force: bool = False) -> TopologyStatus:
    """``clusterduck down``: drain (unless force), kill, and record how it ended."""
    cluster = Cluster(record)
    try:
        return cluster.down(timeout, force=force)
    finally:
        cluster.close()

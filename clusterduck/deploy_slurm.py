"""The deploy engine's Slurm part: a Slurm group's supervisors, one per node, inside one
job (``launch/slurm.py`` runs the scheduler's commands; this module decides what to ask).

``deploy.py`` calls in at a few marked points: starting a group (submit, wait in the
queue, collect each node's readiness), the status of a group whose job has ended, the
job summary that ``status`` shows, and cancelling the job in ``down``. Readiness comes
back over a ZeroMQ message rather than a file, so it needs no shared file system.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .exceptions import ClusterduckError, ProtocolError, StartFailed
from .launch.base import HostConnection
from .launch.slurm import SlurmGroup, SlurmJob, batch_script, code_archive
from .parallel import in_parallel
from .protocol import (
    CurveKeys,
    HostStatus,
    RunLayout,
    SlurmJobStatus,
    State,
    SupervisorReady,
    SupervisorSpec,
    ThisMachine,
    decode_json,
    topology_marker,
)
from .runtime.transport import Socket, Transport, poll
from .state import HostRecord, TopologyRecord

if TYPE_CHECKING:
    from .deploy import Cluster
    from .loader import TopologyFile

__all__ = [
    "cancel",
    "ended_status",
    "group_key",
    "jobs",
    "on_this_machine",
    "start_group",
    "start_groups",
]

READY_TIMEOUT = 60.0  # from RUNNING to every node's supervisor answering


def group_key(group: str, rank: int) -> str:
    return group if rank == 0 else f"{group}#{rank}"


def on_this_machine(conn: HostConnection) -> bool:
    """A Slurm group whose every node is this machine needs no network address."""
    return isinstance(conn, SlurmGroup) and conn.runs_on_this_machine()


def start_groups(
    names: list[str], prepare: Callable[[str], None], conns: dict[str, HostConnection]
) -> None:
    """``prepare`` every group at once. The waits run in threads, which Ctrl-C does not
    reach: the main thread catches it, tells each group's wait to give up (cancelling
    its job), and re-raises once they have."""
    if len(names) == 1:
        prepare(names[0])  # in this thread: Ctrl-C interrupts the wait directly
        return

    def give_up() -> None:
        for name in names:
            conn = conns[name]
            if isinstance(conn, SlurmGroup):
                conn.abort.set()

    # A group's wait ends within a minute of being told to give up (its job cancelled).
    results = in_parallel(names, prepare, on_interrupt=give_up, grace=60.0)
    for name in names:
        result = results[name]
        if isinstance(result, Exception):
            raise result


def start_group(
    name: str,
    tf: TopologyFile,
    record: TopologyRecord,
    conn: SlurmGroup,
    *,
    bind_host: str,
    advertise: str,
    wait: float | None,
    progress: Callable[[str, str, str], None],
    check_python: Callable[[], None],
) -> None:
    """Submit the group's job, follow it through the queue, and record one supervisor
    per node once each has said it is ready. The job id is saved as soon as it exists,
    so a failure or Ctrl-C at any later point cancels it."""
    topo = tf.topology
    host = topo.host(name)
    workdir = os.path.expanduser(host.workdir.rstrip("/"))
    code_dir = f"{workdir}/code/{topo.name}"
    run_dir = RunLayout.of_run(workdir, topo.name, record.run).run_dir
    progress(name, "connect", "sbatch")
    conn.connect()
    if host.shared_fs:
        progress(name, "check", host.python)
        check_python()
        progress(name, "ship", str(tf.code_dir))
        shipped = conn.ship(tf.code_dir, code_dir)
        progress(name, "ship", f"{len(shipped.sent)} sent, {shipped.unchanged} unchanged")
        os.makedirs(run_dir, exist_ok=True)
        output = f"{run_dir}/slurm-%j.out"
    else:
        output = f"/tmp/clusterduck-{topo.name}-%j.out"
    curve = CurveKeys.from_dict(record.curve)
    transport = Transport(curve)
    try:
        inbox = transport.pull(bind_host, advertise)
        names = {socket.gethostname(), socket.getfqdn(), socket.gethostname().split(".")[0]}
        spec = SupervisorSpec(
            topology=record.spec,
            host=name,
            code_dir=code_dir,
            run_dir=run_dir,
            bind_host=bind_host,
            advertise=advertise,
            curve=curve.for_host(record.spec, name) if curve else None,
            env=host.env,
            report_to=inbox.endpoint,
            this_machine=ThisMachine(tuple(sorted(names)), bind_host, advertise),
            code_archive=None if host.shared_fs else code_archive(tf.code_dir),
        )
        script = batch_script(host.python, json.dumps(spec.to_dict()), topology_marker(topo.name))
        progress(name, "queue", "sbatch")
        job_id = conn.submit(script, f"clusterduck-{topo.name}-{name}", output)
        assert host.slurm is not None
        facts = {
            "job_id": job_id,
            "size": host.slurm.nodes,
            "partition": host.slurm.partition or "",
            "output": output,
        }
        rec = record.hosts[name]
        rec.slurm = {**facts, "rank": 0}
        record.save()
        job = conn.wait_running(job_id, wait, lambda j: progress(name, "queue", j.describe()))
        progress(name, "start", f"{len(job.nodes)} supervisor(s) on {','.join(job.nodes)}")
        for ready in _collect(conn, inbox, job, host.slurm.nodes, output):
            key = group_key(name, ready.rank)
            node_rec = record.hosts.get(key) or HostRecord(
                name=key, remote=True, python=rec.python, connect=rec.connect
            )
            node_rec.control, node_rec.pid = ready.control, ready.pid
            node_rec.run_dir = ready.run_dir
            node_rec.slurm = {**facts, "rank": ready.rank, "node": ready.node}
            record.hosts[key] = node_rec
        record.save()
    finally:
        transport.close(linger_ms=0)


def _collect(
    conn: SlurmGroup, inbox: Socket, job: SlurmJob, nodes: int, output: str
) -> list[SupervisorReady]:
    """Each node supervisor's readiness message, or StartFailed with the job's output."""
    readies: dict[int, SupervisorReady] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    while len(readies) < nodes:
        readable, _ = poll([inbox], timeout=0.5)
        if readable:
            frames = inbox.recv(block=False)
            if frames:
                try:
                    ready = SupervisorReady.from_dict(decode_json(frames[-1]))
                except ProtocolError:
                    continue  # not a readiness message: dropped
                readies[ready.rank] = ready
            continue
        now = conn.job(job.job_id)
        if now.ended or time.monotonic() > deadline:
            tail = (conn.read_file(output.replace("%j", job.job_id)) or b"").decode(
                errors="replace"
            )[-3000:]
            why = (
                f"the job ended ({now.describe()})"
                if now.ended
                else f"{nodes - len(readies)} of {nodes} supervisor(s) did not report ready "
                f"within {READY_TIMEOUT:g}s"
            )
            raise StartFailed(
                conn.name,
                f"job {job.job_id}: {why}",
                log_tail=tail,
                hint="check the group's python and workdir on the nodes; "
                f"the job's output is {output}",
            )
    return [readies[r] for r in sorted(readies)]


def _conn(cluster: Cluster, host: str) -> SlurmGroup:
    conn = cluster.conn(host)
    assert isinstance(conn, SlurmGroup)
    return conn


def ended_status(cluster: Cluster, host: str) -> HostStatus | None:
    """The status of a node whose job has ended (None while it runs): its final.json
    when it finished normally, else the scheduler's verdict (time limit, preemption)."""
    rec = cluster.record.hosts[host]
    job = _conn(cluster, host).job(rec.slurm["job_id"])
    if not job.ended:
        return None
    try:
        data = cluster.conn(host).read_file(RunLayout(rec.run_dir).final_status)
    except ClusterduckError:
        data = None
    if data:
        try:
            return HostStatus.from_dict(decode_json(data))
        except ProtocolError:
            pass
    return HostStatus(
        host, State.FAILED, rec.pid, f"Slurm {job.describe()}: the scheduler ended it"
    )


def jobs(cluster: Cluster) -> dict[str, SlurmJobStatus]:
    """``status``'s view of each group's job: id, state, reason, nodes."""
    seen: dict[str, SlurmJobStatus] = {}
    for key, rec in cluster.record.hosts.items():
        if not rec.slurm or rec.slurm.get("rank", 0) != 0:
            continue
        job_id = str(rec.slurm["job_id"])
        try:
            job = _conn(cluster, key).job(job_id)
        except ClusterduckError as exc:
            job = SlurmJob(job_id, "UNKNOWN", str(exc))
        nodes = list(job.nodes) or [
            str(r.slurm["node"])
            for r in cluster.record.hosts.values()
            if r.slurm.get("job_id") == job_id and r.slurm.get("node")
        ]
        seen[key] = SlurmJobStatus(
            job_id, job.state, job.reason, tuple(nodes), str(rec.slurm.get("partition", ""))
        )
    return seen


def cancel(cluster: Cluster, host: str) -> None:
    """``scancel`` the node's job (idempotent: every node of a group asks) and wait
    until Slurm has taken it back."""
    rec = cluster.record.hosts[host]
    try:
        _conn(cluster, host).cancel(rec.slurm["job_id"])
    except ClusterduckError:
        pass

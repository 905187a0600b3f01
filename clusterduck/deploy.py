"""Starting, querying and stopping a topology across its hosts (the CLI's engine).

``up`` runs in steps, every host in parallel where it can: connect → check the
interpreter → ship ``code`` → start the supervisor → spawn every process → wire them
together → start the spouts. A failure at any step tears down everything started on
every host before the error reaches the caller. Nothing here prints: progress goes to a
callback, errors are raised.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import __version__
from .exceptions import (
    ClusterduckError,
    ControlTimeout,
    LaunchError,
    RemotePythonError,
    StartFailed,
    StateError,
)
from .launch.base import HostConnection
from .launch.local import LocalHost
from .loader import TopologyFile
from .runtime.procfs import pid_alive
from .runtime.supervisor import instance_row, sweep, topology_marker
from .runtime.transport import CurveKeys, generate_curve_keys, request
from .state import HostRecord, TopologyRecord, clusterduck_home, load_all
from .topology import LOCALHOST, Host, Topology

__all__ = ["Progress", "Cluster", "start", "topology_status"]

Progress = Callable[[str, str, str], None]  # (host, step, detail)

START_TIMEOUT = 60.0
LOCAL_REQUEST_TIMEOUT = 3.0
REMOTE_REQUEST_TIMEOUT = 5.0


def _no_progress(host: str, step: str, detail: str = "") -> None:
    pass


def open_connection(
    name: str, host: Host, *, accept_new_host_keys: bool = False, remote: bool = True
) -> HostConnection:
    if not remote:
        return LocalHost()
    from .launch.ssh import SSHHost  # paramiko is imported only when a host is remote

    return SSHHost(name, host, accept_new_host_keys=accept_new_host_keys)


class Cluster:
    """The hosts of one topology record, reachable for control and cleanup."""

    def __init__(self, record: TopologyRecord, *, accept_new_host_keys: bool = False) -> None:
        self.record = record
        self.curve = CurveKeys.from_dict(record.curve)
        self.accept_new_host_keys = accept_new_host_keys
        self._conns: dict[str, HostConnection] = {}

    def conn(self, host: str) -> HostConnection:
        if host not in self._conns:
            rec = self.record.hosts[host]
            self._conns[host] = open_connection(
                host,
                Host(**rec.connect),
                remote=rec.remote,
                accept_new_host_keys=self.accept_new_host_keys,
            )
        return self._conns[host]

    def request(
        self, host: str, message: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        rec = self.record.hosts[host]
        if timeout is None:
            timeout = REMOTE_REQUEST_TIMEOUT if rec.remote else LOCAL_REQUEST_TIMEOUT
        return request(rec.control, message, timeout=timeout, curve=self.curve)

    def each(self, fn: Callable[[str], Any]) -> dict[str, Any]:
        """``fn(host)`` for every host with a supervisor, in parallel (see in_parallel)."""
        return in_parallel([h for h, r in self.record.hosts.items() if r.control], fn)

    # -- status ----------------------------------------------------------------------

    def host_status(self, host: str) -> dict[str, Any]:
        rec = self.record.hosts[host]
        if not rec.remote and not pid_alive(rec.pid):
            return self._final_or_lost(host, "supervisor process is gone")
        try:
            return self.request(host, {"op": "status"})
        except ControlTimeout:
            return self._final_or_lost(host, "supervisor does not answer")

    def _final_or_lost(self, host: str, why: str) -> dict[str, Any]:
        rec = self.record.hosts[host]
        try:
            data = self.conn(host).read_file(f"{rec.run_dir}/final.json")
        except ClusterduckError:
            data = None
        if data:
            return json.loads(data)
        return {
            "host": host,
            "pid": rec.pid,
            "state": "unreachable",
            "failure": why,
            "instances": [],
        }

    def status(self) -> dict[str, Any]:
        topo = Topology.model_validate(self.record.topology)
        per_host = self.each(self.host_status)
        by_instance: dict[tuple[str, int], dict[str, Any]] = {}
        host_states: dict[str, str] = {}
        problems: list[str] = []
        for host, result in per_host.items():
            if isinstance(result, Exception):
                result = {"state": "unreachable", "failure": str(result), "instances": []}
            host_states[host] = result["state"]
            if result.get("failure"):
                problems.append(f"{host}: {result['failure']}")
            for row in result.get("instances", []):
                by_instance[(row["component"], row["index"])] = row
        components = []
        for comp in topo.components:
            rows = []
            for i in range(comp.parallelism):
                host = comp.host_of(i)
                row = by_instance.get((comp.name, i)) or instance_row(
                    comp.name,
                    i,
                    host,
                    "unreachable" if host_states.get(host) == "unreachable" else "starting",
                )
                row = {k: v for k, v in row.items() if k != "component"}
                rows.append(row)
            components.append({"name": comp.name, "kind": comp.kind, "instances": rows})
        return {
            "name": self.record.name,
            "state": _overall(host_states, self.record.status),
            "hosts": host_states,
            "problems": problems,
            "components": components,
        }

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float, *, force: bool = False) -> dict[str, Any]:
        """Graceful drain (unless force), then kill what is left and sweep every host."""
        final: dict[str, Any] | None = None
        if not force:
            self.each(self._ask_stop)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                final = self.status()
                # Done when no host still runs anything that could drain: an unreachable
                # host or a lost supervisor cannot drain, waiting would only cost time.
                if all(s in ("finished", "failed", "unreachable") for s in final["hosts"].values()):
                    break
                time.sleep(0.3)
        if final is None:
            final = self.status()
        self.each(self._kill_host)
        return final

    def _ask_stop(self, host: str) -> None:
        rec = self.record.hosts[host]
        if rec.remote or pid_alive(rec.pid):
            try:
                self.request(host, {"op": "stop"})
            except ClusterduckError:
                pass  # status will show the host unreachable; kill still sweeps it

    def _kill_host(self, host: str) -> None:
        rec = self.record.hosts[host]
        if rec.remote or pid_alive(rec.pid):
            try:
                self.request(host, {"op": "kill"}, timeout=2.0)
            except ClusterduckError:
                pass
        if not rec.remote:
            sweep(rec.pid, self.record.name)
            return
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

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def _overall(host_states: dict[str, str], recorded: str) -> str:
    states = set(host_states.values())
    if not states:
        return recorded
    if "unreachable" in states:
        return "broken" if recorded in ("starting", "running") else recorded
    if states <= {"finished"}:
        return "finished"
    if "failed" in states:
        return "failed" if states <= {"finished", "failed"} else "failing"
    if recorded == "stopped":
        return "stopped"
    return "running" if "running" in states else next(iter(states))


# -- up -------------------------------------------------------------------------------


def start(
    tf: TopologyFile,
    *,
    progress: Progress = _no_progress,
    accept_new_host_keys: bool = False,
    collector: str | None = None,
    curve: CurveKeys | None = None,
) -> TopologyRecord:
    """Start every process of the topology; on any failure nothing stays running."""
    topo = tf.topology
    for rec in load_all():
        if rec.name == topo.name and rec.active:
            if topology_status(rec)["state"] not in ("finished", "failed", "broken", "stopped"):
                raise StateError(
                    f"topology {topo.name!r} is already running (started from {rec.file}); "
                    f"stop it first with `clusterduck down {topo.name}`"
                )
    remote_hosts = [h for h in topo.hosts_used() if topo.is_remote(h)]
    record = TopologyRecord(
        name=topo.name,
        file=str(tf.path),
        code_dir=str(tf.code_dir),
        topology=topo.model_dump(mode="json"),
        curve=(curve or generate_curve_keys()).to_dict() if topo.uses_curve else None,
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
        _prepare_hosts(tf, record, conns, home, bool(remote_hosts), progress)
        _spawn_and_wire(cluster, collector, progress)
    except BaseException:
        cluster.each(cluster._kill_host)
        record.status = "failed"
        record.save()
        cluster.close()
        raise
    record.status = "running"
    record.save()
    cluster.close()
    return record


def _prepare_hosts(
    tf: TopologyFile,
    record: TopologyRecord,
    conns: dict[str, HostConnection],
    home: Path,
    multi_host: bool,
    progress: Progress,
) -> None:
    topo = tf.topology
    local_address = topo.host(LOCALHOST).address

    def prepare(name: str) -> None:
        rec = record.hosts[name]
        conn = conns[name]
        if rec.remote:
            progress(name, "connect", "")
            conn.connect()
            progress(name, "check", rec.python)
            _check_python(name, conn, rec.python)
            workdir = topo.host(name).workdir.rstrip("/")
            code_dir = f"{workdir}/code/{topo.name}"
            run_dir = f"{workdir}/runs/{topo.name}"
            progress(name, "ship", str(tf.code_dir))
            shipped = conn.ship(tf.code_dir, code_dir)
            progress(name, "ship", f"{len(shipped.sent)} sent, {shipped.unchanged} unchanged")
            advertise = getattr(conn, "resolved_address", None) or topo.host(name).address or name
            bind_host = "0.0.0.0"
        else:
            code_dir = str(tf.code_dir)
            run_dir = str(home / "runs" / topo.name)
            if multi_host:
                bind_host = "0.0.0.0"
                advertise = local_address or _local_address_towards(record, conns)
            else:
                bind_host = advertise = "127.0.0.1"
        progress(name, "start", "supervisor")
        spec = {
            "topology": record.topology,
            "host": name,
            "code_dir": code_dir,
            "run_dir": run_dir,
            "bind_host": bind_host,
            "advertise": advertise,
            "curve": record.curve,
            "env": topo.host(name).env,
        }
        result = conn.run(
            [rec.python, "-m", "clusterduck.runtime.supervisor", *topology_marker(topo.name)],
            stdin=json.dumps(spec).encode(),
            timeout=START_TIMEOUT,
        )
        if result.returncode != 0 or not result.stdout.strip():
            raise StartFailed(
                name,
                "the supervisor did not start",
                log_tail=(result.stderr or result.stdout)[-3000:],
                hint="see the log lines above; run `clusterduck logs` for more",
            )
        ready = json.loads(result.stdout.strip().splitlines()[-1])
        rec.control, rec.pid = ready["control"], ready["pid"]
        rec.run_dir = ready["run_dir"]  # absolute: `~` expanded on that host
        record.save()

    raise_first_error(in_parallel(list(record.hosts), prepare))


def _spawn_and_wire(cluster: Cluster, collector: str | None, progress: Progress) -> None:
    record = cluster.record

    def step(op: str, payload: dict[str, Any]) -> dict[str, Any]:
        def one(host: str) -> dict[str, Any]:
            progress(host, op, "")
            reply = cluster.request(
                host, {"op": op, "timeout": START_TIMEOUT, **payload}, timeout=START_TIMEOUT + 5
            )
            if not reply.get("ok"):
                raise StartFailed(
                    host,
                    f"{reply.get('component')}: {reply.get('error')}",
                    component=reply.get("component"),
                    log_tail=reply.get("log_tail", ""),
                )
            return reply

        return raise_first_error(cluster.each(one))

    endpoints: dict[str, dict[str, str]] = {}
    for reply in step("spawn", {}).values():
        endpoints.update(reply["endpoints"])
    supervisors = [r.control for r in record.hosts.values()]
    step("wire", {"endpoints": endpoints, "collector": collector, "supervisors": supervisors})
    step("start", {})
    for host in record.hosts:
        progress(host, "ready", "")


def _check_python(host: str, conn: HostConnection, python: str) -> None:
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
            host, f"interpreter {python!r} did not run: {result.stderr.strip()[-500:]}", fix
        )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if not found.get("clusterduck"):
        raise RemotePythonError(
            host,
            f"{python} (Python {found['python']}) cannot import clusterduck "
            f"({found.get('clusterduck_error')})",
            fix,
        )
    if not found.get("zmq"):
        raise RemotePythonError(host, f"{python} cannot import zmq", fix)
    if found["clusterduck"].split(".")[:2] != __version__.split(".")[:2]:
        raise RemotePythonError(
            host,
            f"{python} has clusterduck {found['clusterduck']}, this machine has "
            f"{__version__}: versions must match in major.minor",
            fix,
        )


def _local_address_towards(record: TopologyRecord, conns: dict[str, HostConnection]) -> str:
    """The address of this machine on the route to the first remote host."""
    for name, rec in record.hosts.items():
        if rec.remote:
            target = getattr(conns[name], "resolved_address", None) or name
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect((target, 9))
                    return s.getsockname()[0]
            except OSError:
                continue
    raise LaunchError(
        LOCALHOST,
        "cannot tell which address remote hosts should use to reach this machine",
        "set hosts.localhost.address in the topology file",
    )


def in_parallel(items: list[str], fn: Callable[[str], Any]) -> dict[str, Any]:
    """``fn(item)`` for every item at once (hosts are slow, not busy): result or exception."""
    results: dict[str, Any] = {}
    if not items:
        return results
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = {item: pool.submit(fn, item) for item in items}
        for item, fut in futures.items():
            try:
                results[item] = fut.result()
            except Exception as exc:  # noqa: BLE001 - the caller decides
                results[item] = exc
    return results


def raise_first_error(results: dict[str, Any]) -> dict[str, Any]:
    for result in results.values():
        if isinstance(result, Exception):
            raise result
    return results


def topology_status(record: TopologyRecord) -> dict[str, Any]:
    """Status of a record; an ended topology answers from its saved final status."""
    if not record.active and record.final is not None:
        return record.final
    cluster = Cluster(record)
    try:
        status = cluster.status()
    finally:
        cluster.close()
    if status["state"] in ("finished", "failed") and record.active:
        record.status = status["state"]
        record.final = status
        record.save()
    return status

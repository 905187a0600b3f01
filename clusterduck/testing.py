"""Run a topology from your own tests and get back what its sinks produced.

Two ways, one result type:

* ``run_inprocess(path)`` — no sockets, no processes: spouts run one after another in the
  calling thread and every message is pushed synchronously through the same bundling,
  sequencing and routing code the real processes use. Fast and deterministic; use it for
  the logic of your functions. Worker errors are counted as in a real run; an exception
  from a spout, or ``FatalError`` under ``on_error: stop``, reaches your test.
* ``run_processes(path)`` — the real thing on this machine: a supervisor, one process
  per instance, ZeroMQ in between, exactly as ``clusterduck up`` starts it; what the
  sinks return is collected over a socket. Use it to test the deployment too.

A *sink* is a component nothing else reads from; its return values are what you get.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import RuntimeFault
from .loader import TopologyFile, load
from .protocol import (
    Batch,
    ComponentStatus,
    InstanceStatus,
    State,
    TopologySpec,
    TopologyStatus,
    parse_header,
)
from .runtime.anomalies import Anomalies
from .runtime.codec import get_codec
from .runtime.component import WorkerLogic, load_user_code
from .runtime.context import InstanceContext, set_context
from .runtime.metrics import Metrics
from .runtime.routing import Route
from .runtime.transport import Transport, generate_curve_keys, private_dir

__all__ = ["TopologyResult", "run_inprocess", "run_processes"]


@dataclass
class TopologyResult:
    """What the sinks produced, per sink component, as ``(seq_id, value)`` pairs."""

    outputs: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    # How the run ended, in the shape of ``clusterduck status`` (``.to_dict()`` is its
    # ``--json``); ``run_inprocess`` fills in the workers' counters.
    status: TopologyStatus = field(default_factory=lambda: TopologyStatus("", State.STARTING))

    def values(self, sink: str) -> list[Any]:
        return [value for _, value in self.outputs.get(sink, [])]


def _as_file(path: str | Path | TopologyFile) -> TopologyFile:
    return path if isinstance(path, TopologyFile) else load(path)


@contextlib.contextmanager
def _inside(code_dir: Path) -> Iterator[None]:
    """Run user code as a process would: cwd and import path at ``code``."""
    old_cwd = os.getcwd()
    sys.path.insert(0, str(code_dir))
    os.chdir(code_dir)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(code_dir))
        set_context(None)


def run_inprocess(path: str | Path | TopologyFile) -> TopologyResult:
    """Run the topology synchronously in this process (see the module docstring)."""
    tf = _as_file(path)
    topo = TopologySpec.from_topology(tf.topology)
    result = TopologyResult(outputs={c.name: [] for c in topo.sinks()})
    with _inside(tf.code_dir):
        logics: dict[str, list[WorkerLogic]] = {}
        contexts: dict[str, list[InstanceContext]] = {}
        closers = []
        for worker in topo.workers:
            logics[worker.name] = []
            contexts[worker.name] = []
            for i in range(worker.parallelism):
                ctx = InstanceContext(
                    topo.name, worker.name, i, worker.parallelism, worker.host_of(i)
                )
                contexts[worker.name].append(ctx)
                set_context(ctx)
                code = load_user_code(worker, tf.code_dir)
                logics[worker.name].append(
                    WorkerLogic(worker, code.call, metrics=Metrics(), anomalies=Anomalies())
                )
                closers.append(code.close)
        routes = {w.name: Route.for_worker(w, tf.code_dir) for w in topo.workers}

        def deliver(origin: str, batch: list[tuple[int, Any]]) -> None:
            if not batch:
                return
            if origin in result.outputs:
                result.outputs[origin].extend(batch)
            for worker in topo.downstream(origin):
                route = routes[worker.name]
                parts = route.split(batch)
                if parts is None:  # shuffle: every instance has room, so they take turns
                    i = route.shuffle_order()[0]
                    route.took(i)
                    parts = {i: batch}
                for i, part in parts.items():
                    set_context(contexts[worker.name][i])  # who am I, for this call
                    # as a process feeds a decoded frame: its two columns
                    ids, values = [seq for seq, _ in part], [value for _, value in part]
                    out = logics[worker.name][i].feed_columns(origin, ids, values)
                    deliver(worker.name, list(zip(*out, strict=True)))

        for spout in topo.spouts:
            for i in range(spout.parallelism):
                set_context(
                    InstanceContext(topo.name, spout.name, i, spout.parallelism, spout.host_of(i))
                )
                code = load_user_code(spout, tf.code_dir)

                def dispatch(seq: int, value: Any, _s: str = spout.name) -> None:
                    deliver(_s, [(seq, value)])

                if code.is_async:

                    async def dispatch_async(seq: int, value: Any) -> None:
                        dispatch(seq, value)

                    asyncio.run(code.call(dispatch_async))
                else:
                    code.call(dispatch)
                if code.close:
                    code.close()
        for name in topo.topological_order():
            for i, logic in enumerate(logics.get(name, [])):
                set_context(contexts[name][i])
                deliver(name, logic.finish())
        for close in closers:
            if close is not None:
                close()
        result.status = _inprocess_status(topo, logics)
    return result


def _inprocess_status(topo: TopologySpec, logics: dict[str, list[WorkerLogic]]) -> TopologyStatus:
    """The workers' counters after an in-process run, shaped like ``status``."""
    components = []
    for name, logs in logics.items():
        comp = topo.component(name)
        rows = tuple(
            InstanceStatus(
                name,
                i,
                comp.host_of(i),
                State.FINISHED,
                received=lg.metrics.received,
                emitted=lg.metrics.emitted,
                errors=lg.metrics.errors,
                last_error=lg.metrics.last_error,
                anomalies=lg.anomalies.as_dict(),
            )
            for i, lg in enumerate(logs)
        )
        components.append(ComponentStatus(name, comp.kind, rows))
    return TopologyStatus(topo.name, State.FINISHED, {}, (), tuple(components))


def run_processes(
    path: str | Path | TopologyFile, *, timeout: float = 120.0, home: str | Path | None = None
) -> TopologyResult:
    """Run the topology as real local processes and collect what its sinks return.

    ``home`` is the ``$CLUSTERDUCK_HOME`` to use (a temporary one by default), so tests
    never see or disturb topologies started by hand. Everything started is stopped
    before this returns, also on failure or timeout.
    """
    from . import deploy

    tf = _as_file(path)
    topo = tf.topology
    own_home = tempfile.TemporaryDirectory(prefix="clusterduck-test-") if home is None else None
    previous_home = os.environ.get("CLUSTERDUCK_HOME")
    os.environ["CLUSTERDUCK_HOME"] = str(home or own_home.name)  # type: ignore[union-attr]
    curve = generate_curve_keys(deploy.instance_names(topo)) if topo.uses_curve else None
    collector_dir = private_dir(topo.name) if topo.uses_private_ipc else None
    transport = Transport(curve, ipc_dir=collector_dir)
    inbox = transport.pull("127.0.0.1", "127.0.0.1", name="collector")
    codec = get_codec(topo.settings.serializer)
    expected = {f"{c.name}/{i}" for c in topo.sinks() for i in range(c.parallelism)}
    ended: set[str] = set()
    result = TopologyResult(outputs={c.name: [] for c in topo.sinks()})
    record = None
    try:
        record = deploy.start(tf, collector=inbox.endpoint, curve=curve)
        deadline = time.monotonic() + timeout
        while not expected <= ended:
            if time.monotonic() > deadline:
                raise RuntimeFault(
                    f"topology {topo.name!r} did not finish within {timeout:g}s; "
                    f"sinks still open: {sorted(expected - ended)}"
                )
            if not inbox.raw.poll(200):
                # Sinks that were killed (on_error: stop, a crash) never send end of
                # stream: ask how the topology is doing instead of waiting forever.
                status = deploy.topology_status(record)
                if status.state in (State.FAILED, State.BROKEN):
                    result.status = status
                    return result
                continue
            frames = inbox.recv()
            assert frames is not None
            header = parse_header(frames[0])
            if header is None:
                continue  # not from a sink of this topology
            if header.eos:
                ended.add(header.sender)
            elif header.component in result.outputs and len(frames) > 1:
                batch: Batch = codec.loads(frames[1])
                result.outputs[header.component].extend((seq, value) for seq, value in batch)
        result.status = _wait_finished(record, deadline)
    finally:
        if record is not None:
            cluster = deploy.Cluster(record)
            cluster.stop(timeout=5, force=True)
            cluster.close()
        transport.close(linger_ms=0)
        if collector_dir is not None:
            shutil.rmtree(collector_dir, ignore_errors=True)
        if previous_home is None:
            os.environ.pop("CLUSTERDUCK_HOME", None)
        else:
            os.environ["CLUSTERDUCK_HOME"] = previous_home
        if own_home is not None:
            own_home.cleanup()
    return result


def _wait_finished(record: Any, deadline: float) -> TopologyStatus:
    from . import deploy

    while True:
        status = deploy.topology_status(record)
        if status.state in (State.FINISHED, State.FAILED) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)

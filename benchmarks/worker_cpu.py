"""CPU per message of one worker process, fed frames of a chosen size by a raw feeder.

    python benchmarks/worker_cpu.py [--messages 1000000] [--frames 100,1000,4000]
                                    [--rounds 3] [--kind identity,sink]
                                    [--serializer pickle] [--tree SOURCE_TREE]
                                    [--rate FRAMES_PER_SECOND] [--raw]

    # a trickle: one message per frame, 10,000 a second, beside a raw pyzmq worker
    python benchmarks/worker_cpu.py -n 50000 --frames 1 --rate 10000 --kind identity --raw

The whole pipeline's rate (``throughput.py``) mixes four processes, their frame sizes
and the neighbours on a shared machine; this isolates the worker side of the runtime.
The measured process runs the real receive loop (``ComponentProcess.run_worker``: the
inbound guard, decoding, the user's function over the values, the outbox's encoding and
credit, grants) on real ZeroMQ sockets (ipc, as ``security: auto`` on one machine). A
second process plays the upstream instance (it sends frames of ``--frames`` messages
``(i, "x")`` as far as the worker's credit allows) and the downstream one (it grants
credit for every frame at once), and answers the worker's reports.

``identity``: a worker that returns its input (``benchmarks/pipeline/pipeline.py``);
``sink``: the benchmark's counting sink, with nothing downstream. Printed: the worker's
CPU time (every thread, ``time.process_time``) per message, median of ``--rounds``,
and its frames in and out. ``--tree`` measures another source tree (``git archive``)
in the same interleaved rounds.

``--rate`` paces the frames (the feeder spins for the last 0.2 ms before each, as the
latency benchmark's spout does), so that each one reaches an idle worker: the cost of a
trickle, where every frame pays for a wake-up, the receive loop's turn and a send. With
``--raw``, a raw pyzmq worker (PULL, unpickle, the identity over the frame, pickle,
PUSH; tcp loopback) is measured alongside with the same frames and pace: the floor of
what ZeroMQ and pickle cost in Python.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RAW = "raw pyzmq"


def _feeder(
    n: int, frame: int, serializer: str, sink: bool, tree: str, q: Any, ready: Any, rate: float
) -> None:
    """Upstream (feeds ``n`` messages as credit allows; ``rate``: frames a second, paced)
    and downstream (grants at once)."""
    sys.path.insert(0, tree)
    import zmq

    from clusterduck.protocol import (
        Grant,
        data_header,
        eos_header,
        grant_frame,
        pack_count,
        parse_grant,
    )
    from clusterduck.runtime.codec import get_codec

    codec = get_codec(serializer)
    ctx = zmq.Context()
    tmp = tempfile.mkdtemp(prefix="cd-wcpu-")
    control = ctx.socket(zmq.ROUTER)
    control.bind(f"ipc://{tmp}/control")
    down = ctx.socket(zmq.ROUTER)
    down.bind(f"ipc://{tmp}/down")
    q.put((f"ipc://{tmp}/control", f"ipc://{tmp}/down"))
    inbox = ready.get(timeout=60)
    up = ctx.socket(zmq.DEALER)
    up.identity = b"src/0@feeder"
    up.sndhwm = up.rcvhwm = 10_000
    up.connect(inbox)
    values = [(i, "x") for i in range(n)]
    header, eos = data_header("src", 0), eos_header("src", 0)
    sent, limit, processed = 0, 1, 0  # INITIAL_CREDIT until the first grant
    delivered, eos_seen, granted = 0, sink, 0
    poller = zmq.Poller()
    for sock in (control, down, up):
        poller.register(sock, zmq.POLLIN)
    q.put("go")
    try:  # a small frame travels as one part in newer trees (protocol.data_part)
        from clusterduck.protocol import ONE_PART_BELOW, data_part
    except ImportError:
        ONE_PART_BELOW = 0
    interval, due = 1.0 / rate if rate else 0.0, time.monotonic()
    while True:
        timeout = 100.0
        free, window = limit - sent, limit - processed
        wait = due - time.monotonic() if rate else 0.0
        if sent < n and wait > 0:
            # Paced: the next frame is due later; meanwhile answer what arrives (a spin
            # in the last 0.2 ms, as the latency benchmark's spout paces itself).
            timeout = wait * 1000 - 0.1 if wait > 0.0002 else 0
        elif sent < n and free > 0 and (free >= min(frame, window // 2) or sent == processed):
            due += interval
            k = min(frame, free, n - sent)
            payload = codec.dumps_columns(range(sent, sent + k), values[sent : sent + k])
            sent += k
            if len(payload) < ONE_PART_BELOW:
                up.send(data_part(header, sent, payload))
            else:
                up.send_multipart([header, payload, pack_count(sent)])
            if sent == n:
                up.send_multipart([eos])
            continue
        elif sent == n and eos_seen and not ready.empty():
            break  # the worker is done (it says so once its end of stream left)
        for sock, _ in poller.poll(timeout):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if sock is up:
                    grant = parse_grant(frames[0])
                    if grant is not None:
                        processed, limit = grant.processed, grant.limit
                elif sock is down:
                    if frames[1][:1] == b"E":
                        eos_seen = True
                    elif frames[1][:1] in (b"D", b"d"):  # three parts, or one (small)
                        if len(frames) == 2:
                            from clusterduck.protocol import split_data_part  # newer trees

                            split = split_data_part(frames[1])
                            assert split is not None
                            _, total, payload = split
                        else:
                            total, payload = int.from_bytes(frames[3], "little"), frames[2]
                        delivered += len(codec.loads_columns(payload)[1])
                        # As a real receiver does: a grant once the worker holds under
                        # half its credit (not one per frame, which a trickle never gets).
                        if granted - total < 5_000:
                            granted = total + 10_000
                            grant = Grant(total, granted, 0.0)
                            down.send_multipart([frames[0], grant_frame(grant)])
                    elif frames[1][:1] == b"P":
                        total = int.from_bytes(frames[2], "little")
                        granted = total + 10_000
                        grant = Grant(total, granted, 0.0)
                        down.send_multipart([frames[0], grant_frame(grant)])
    q.put(("delivered", delivered))
    for sock in (control, down, up):
        sock.close(linger=1000)
    ctx.term()


def _measure(
    tree: str, n: int, frame: int, kind: str, serializer: str, rate: float, q: Any
) -> None:
    """The measured worker (its own interpreter, importing clusterduck from ``tree``)."""
    sys.path.insert(0, tree)
    sys.path.insert(0, str(HERE / "pipeline"))
    import pipeline  # type: ignore[import-not-found]

    from clusterduck.protocol import ComponentSpec, ProcessSpec, TopologySpec, Wiring
    from clusterduck.runtime.component import UserCode
    from clusterduck.runtime.process import ComponentProcess, _tune_gc
    from clusterduck.runtime.transport import Transport

    sink = kind == "sink"
    comps = [
        ComponentSpec("src", "spout", "pipeline:numbers"),
        ComponentSpec("w", "worker", "pipeline:identity", inputs=("src",)),
    ]
    if not sink:
        comps.append(ComponentSpec("down", "worker", "pipeline:identity", inputs=("w",)))
    topo = TopologySpec("wcpu", tuple(comps), serializer=serializer)
    mpc = mp.get_context("spawn")
    fq: Any = mpc.Queue()
    ready: Any = mpc.Queue()
    feeder = mpc.Process(target=_feeder, args=(n, frame, serializer, sink, tree, fq, ready, rate))
    feeder.start()
    control, down = fq.get(timeout=60)
    tmp = tempfile.mkdtemp(prefix="cd-wcpu-w-")
    spec = ProcessSpec(topo, "w", 0, "localhost", str(HERE), "127.0.0.1", "127.0.0.1", control)
    transport = Transport(None, ipc_dir=tmp, me="w/0")
    proc = ComponentProcess(spec, transport)
    inbox = transport.receiver("127.0.0.1", "127.0.0.1", None, name="w.0.src")
    proc.add_inbox(inbox, "src")
    proc.outbox = proc._connect(Wiring({"down/0": {"w": down}}) if not sink else Wiring({}))
    call = pipeline.Sink(str(n), tmp) if sink else pipeline.identity
    ready.put(inbox.endpoint)
    assert fq.get(timeout=60) == "go"
    _tune_gc()
    wall, cpu = time.perf_counter(), time.process_time()
    proc.run_worker(UserCode(call, None))
    proc.outbox.send_eos(proc.wait_room)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ready.put("done")
    got = fq.get(timeout=60)
    feeder.join(30)
    received = proc.metrics.received
    if received != n or (not sink and got[1] != n):
        raise SystemExit(f"worker received {received}, delivered {got[1]} of {n}")
    q.put((cpu, wall))
    transport.close()


def run(
    tree: str, n: int, frame: int, kind: str, serializer: str, rate: float = 0.0
) -> tuple[float, float]:
    mpc = mp.get_context("spawn")
    q: Any = mpc.Queue()
    proc = mpc.Process(target=_measure, args=(tree, n, frame, kind, serializer, rate, q))
    proc.start()
    result = q.get(timeout=600)
    proc.join(30)
    return result


# -- the raw pyzmq baseline (``--raw``) ---------------------------------------------------


def _raw_feeder(n: int, frame: int, rate: float, port: int) -> None:
    """Frames of ``frame`` pickled ``(i, "x")`` messages through PUSH, paced like _feeder."""
    import pickle

    import zmq

    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)  # the slow joiner
    interval, due = 1.0 / rate if rate else 0.0, time.monotonic()
    for start in range(0, n, frame):
        while rate and (now := time.monotonic()) < due:
            if due - now > 0.0002:
                time.sleep(due - now - 0.0001)
        due += interval
        push.send(pickle.dumps([(i, "x") for i in range(start, min(n, start + frame))]))
    push.send(b"")
    push.close(linger=-1)
    ctx.term()


def _raw_worker(n: int, down: int | None, ports: Any, q: Any) -> None:
    """PULL, unpickle, the identity over the frame, pickle, PUSH (nothing for a sink)."""
    import pickle

    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    ports.put(pull.bind_to_random_port("tcp://127.0.0.1"))
    push = None
    if down is not None:
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{down}")
    loads, dumps, received = pickle.loads, pickle.dumps, 0
    wall = cpu = 0.0
    while (data := pull.recv()) != b"":
        if not received:
            wall, cpu = time.perf_counter(), time.process_time()
        batch = loads(data)
        received += len(batch)
        if push is not None:
            push.send(dumps([(seq, value) for seq, value in batch]))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if push is not None:
        push.send(b"")
        push.close(linger=-1)
    pull.close()
    ctx.term()
    q.put((cpu, wall, received))


def _raw_sink(ports: Any) -> None:
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    ports.put(pull.bind_to_random_port("tcp://127.0.0.1"))
    while pull.recv() != b"":
        pass
    pull.close()
    ctx.term()


def run_raw(n: int, frame: int, kind: str, rate: float = 0.0) -> tuple[float, float]:
    """A raw pyzmq worker's CPU and wall time for the same messages, frames and pace."""
    mpc = mp.get_context("spawn")
    q: Any = mpc.Queue()
    ports: Any = mpc.Queue()
    procs, down = [], None
    if kind != "sink":
        procs.append(mpc.Process(target=_raw_sink, args=(ports,)))
        procs[-1].start()
        down = ports.get(timeout=60)
    procs.append(mpc.Process(target=_raw_worker, args=(n, down, ports, q)))
    procs[-1].start()
    port = ports.get(timeout=60)
    procs.append(mpc.Process(target=_raw_feeder, args=(n, frame, rate, port)))
    procs[-1].start()
    cpu, wall, received = q.get(timeout=600)
    for proc in procs:
        proc.join(30)
    if received != n:
        raise SystemExit(f"raw worker received {received} of {n}")
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", "-n", type=int, default=1_000_000)
    parser.add_argument("--frames", default="100,1000,4000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kind", default="identity,sink")
    parser.add_argument("--serializer", default="pickle", choices=["pickle", "msgpack", "json"])
    parser.add_argument(
        "--rate", type=float, default=0.0, help="frames a second, paced (0: as fast as taken)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="also a raw pyzmq worker, in the same rounds"
    )
    parser.add_argument("--tree", type=Path, help="another clusterduck source tree")
    args = parser.parse_args(argv)
    trees = {"this checkout": str(HERE.parent)}
    if args.tree:
        trees[str(args.tree)] = str(args.tree.resolve())
    if args.raw:
        trees[RAW] = ""
    frames = [int(f) for f in args.frames.split(",") if f]
    kinds = [k for k in args.kind.split(",") if k]
    n = args.messages
    cpu: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            for frame in frames:
                for label, tree in trees.items():
                    if label == RAW:
                        seconds, _ = run_raw(n, frame, kind, args.rate)
                    else:
                        seconds, _ = run(tree, n, frame, kind, args.serializer, args.rate)
                    cpu.setdefault((label, kind, frame), []).append(seconds / n * 1e6)
    print(
        f"{n:,} messages (i, 'x'), {args.serializer}; worker CPU microseconds per message "
        f"(all threads), median of {args.rounds} interleaved rounds"
        + (f", paced at {args.rate:,.0f} frames/s" if args.rate else "")
        + "; load "
        f"{os.getloadavg()[0]:.1f}"
    )
    for kind in kinds:
        for frame in frames:
            for label in trees:
                values = cpu[(label, kind, frame)]
                print(
                    f"  {kind:<9} {frame:>5} msgs/frame  {label:<32} "
                    f"{statistics.median(values):6.3f} us/msg   "
                    f"rounds {', '.join(f'{v:.3f}' for v in values)}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency of clusterduck against raw pyzmq: spout -> w1 -> w2 -> sink, paced.

    python benchmarks/latency.py [--rates 1000,10000,50000] [--seconds 2] [--rounds 3]
                                 [--security auto]  # or none,auto,curve to compare
                                 [--detail]  # also each hop, and CPU per message

Both pipelines are four OS processes over tcp loopback. The raw one sends one pickled
message per frame through PUSH/PULL; the clusterduck one is ``benchmarks/latency.yaml``
run by ``clusterduck.testing.run_processes``. Every message carries ``time.monotonic()``
taken just before ``dispatch`` (raw: before ``send``); the sink takes the difference when
it is called. The first 10% of each run is warm-up and not counted. Rounds interleave raw
and clusterduck at every rate; the figures are medians over rounds of each run's p50/p99.

``--detail`` also stamps every message at w1 and w2 (``latency_detail.yaml``; the raw
workers alike) and reports each hop's p50/p99 (spout -> w1, w1 -> w2, w2 -> sink: the
difference of a message's latencies at the two ends) and each process's CPU time per
message from its first message to its last (every thread, libzmq's too, start-up not
included), which the neighbours on a shared machine move less than latency.
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent
# Where a message's latency is taken (``--detail``), in pipeline order, and the processes.
POINTS = ("w1", "w2", "latency")
PROCESSES = ("spout", "w1", "w2", "sink")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raw_spout(n: int, rate: float, port: int, detail: str | None = None) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)  # the slow joiner
    dumps, interval = pickle.dumps, 1.0 / rate
    began, cpu = time.monotonic(), _cpu_seconds()
    for i in range(n):
        due = began + i * interval
        while (now := time.monotonic()) < due:
            if due - now > 0.0002:
                time.sleep(due - now - 0.0001)
        push.send(dumps((i, time.monotonic())))
    if detail:
        Path(detail, "spout.cpu").write_text(repr(_cpu_seconds() - cpu))
    push.send(b"")
    push.close(linger=-1)
    ctx.term()


def _raw_worker(out_port: int, ports: Any, hop: str = "", detail: str | None = None) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{out_port}")
    ports.put(port)
    loads, dumps = pickle.loads, pickle.dumps
    lat, cpu = array.array("d"), None
    while True:
        data = pull.recv()
        if data == b"":
            push.send(b"")
            break
        seq, value = loads(data)
        if detail:
            lat.append(time.monotonic() - value)
            cpu = _cpu_seconds() if cpu is None else cpu
        push.send(dumps((seq, value)))
    if detail:
        with open(Path(detail, hop), "wb") as f:
            lat.tofile(f)
        Path(detail, f"{hop}.cpu").write_text(repr(_cpu_seconds() - (cpu or 0.0)))
    pull.close(linger=0)
    push.close(linger=-1)
    ctx.term()


def _raw_sink(ports: Any, out: str, detail: str | None = None) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    ports.put(pull.bind_to_random_port("tcp://127.0.0.1"))
    lat, cpu = array.array("d"), None
    loads = pickle.loads
    while True:
        data = pull.recv()
        if data == b"":
            break
        _, stamp = loads(data)
        lat.append(time.monotonic() - stamp)
        if detail and cpu is None:
            cpu = _cpu_seconds()
    with open(out, "wb") as f:
        lat.tofile(f)
    if detail:
        Path(detail, "sink.cpu").write_text(repr(_cpu_seconds() - (cpu or 0.0)))
    pull.close(linger=0)
    ctx.term()


def _read(path: Path) -> list[float]:
    lat = array.array("d")
    lat.frombytes(path.read_bytes())
    return list(lat)


def run_raw(n: int, rate: float, detail: Path | None = None) -> list[float]:
    """Latencies at the sink; ``detail``: a directory to leave each hop's and CPU in."""
    mpc = mp.get_context("spawn")
    ports: Any = mpc.Queue()
    keep = None if detail is None else str(detail)
    with tempfile.TemporaryDirectory(prefix="clusterduck-lat-") as tmp:
        out = str(Path(keep or tmp, "latency"))
        procs = [mpc.Process(target=_raw_sink, args=(ports, out, keep))]
        procs[0].start()
        port = ports.get(timeout=30)
        for hop in ("w2", "w1"):
            procs.append(mpc.Process(target=_raw_worker, args=(port, ports, hop, keep)))
            procs[-1].start()
            port = ports.get(timeout=30)
        procs.append(mpc.Process(target=_raw_spout, args=(n, rate, port, keep)))
        procs[-1].start()
        for proc in procs:
            proc.join(600)
        return _read(Path(out))


def run_clusterduck(
    n: int, rate: float, security: str = "auto", detail: Path | None = None
) -> list[float]:
    """Latencies at the sink; ``detail``: a directory to leave each hop's and CPU in."""
    from clusterduck.loader import load
    from clusterduck.testing import run_processes

    with tempfile.TemporaryDirectory(prefix="clusterduck-lat-") as tmp:
        stamps = str(detail or tmp)
        env = {
            **os.environ,
            "MESSAGES": str(n),
            "STAMPS": stamps,
            "RATE": str(rate),
            "SECURITY": security,
        }
        topology = "latency.yaml" if detail is None else "latency_detail.yaml"
        result = run_processes(load(HERE / topology, environ=env), timeout=600)
        if result.status.state.value != "finished":
            raise SystemExit(f"clusterduck run ended {result.status.state.value}")
        return _read(Path(stamps, "latency"))


def percentiles(lat: list[float], n: int) -> tuple[float, float]:
    if len(lat) != n:
        raise SystemExit(f"expected {n} latencies, got {len(lat)}")
    kept = sorted(lat[n // 10 :])
    return kept[len(kept) // 2] * 1000, kept[int(len(kept) * 0.99)] * 1000


def hops(detail: Path, n: int) -> dict[str, float]:
    """Each hop's p50/p99 (ms) and each process's CPU per message (µs) of one run."""
    out: dict[str, float] = {}
    before = [0.0] * n
    for point, name in zip(POINTS, ("spout>w1", "w1>w2", "w2>sink"), strict=True):
        at = _read(detail / point)
        if len(at) != n:
            raise SystemExit(f"expected {n} latencies at {point}, got {len(at)}")
        out[f"{name} p50"], out[f"{name} p99"] = percentiles(
            [a - b for a, b in zip(at, before, strict=True)], n
        )
        before = at
    for proc in PROCESSES:
        out[f"{proc} cpu"] = float((detail / f"{proc}.cpu").read_text()) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000,50000")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--security", default="auto", help="comma-separated security settings of clusterduck"
    )
    parser.add_argument(
        "--detail", action="store_true", help="also each hop's latency and CPU per message"
    )
    args = parser.parse_args(argv)
    securities = [s for s in args.security.split(",") if s]
    rates = [float(r) for r in args.rates.split(",")]
    print(
        f"spout -> w1 -> w2 -> sink, 4 processes, tcp loopback, {os.cpu_count()} CPUs, "
        f"{args.seconds:g}s per run, median of {args.rounds} interleaved rounds (ms)"
    )
    results: dict[tuple[str, float], list[tuple[float, float]]] = {}
    details: dict[tuple[str, float], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for rate in rates:
            n = int(rate * args.seconds)
            for kind in ["raw", *securities]:
                with tempfile.TemporaryDirectory(prefix="clusterduck-lat-") as tmp:
                    detail = Path(tmp) if args.detail else None
                    if kind == "raw":
                        lat = run_raw(n, rate, detail)
                    else:
                        lat = run_clusterduck(n, rate, kind, detail)
                    results.setdefault((kind, rate), []).append(percentiles(lat, n))
                    if detail is not None:
                        details.setdefault((kind, rate), []).append(hops(detail, n))
    print(
        f"{'rate/s':>8} {'security':>8}  {'p50 duck-raw':>12} {'p99 duck-raw':>12}   "
        f"{'raw p50':>8} {'raw p99':>8}   {'duck p50':>8} {'duck p99':>8}"
    )
    for rate in rates:
        raw = results[("raw", rate)]
        r50 = statistics.median(p for p, _ in raw)
        r99 = statistics.median(p for _, p in raw)
        for security in securities:
            duck = results[(security, rate)]
            d50 = statistics.median(p for p, _ in duck)
            d99 = statistics.median(p for _, p in duck)
            print(
                f"{rate:>8,.0f} {security:>8}  {d50 - r50:>+12.2f} {d99 - r99:>+12.2f}   "
                f"{r50:>8.2f} {r99:>8.2f}   {d50:>8.2f} {d99:>8.2f}"
            )
    if details:
        keys = list(next(iter(details.values()))[0])
        print("each hop p50/p99 (ms), CPU per message of each process (us); medians")
        print(f"{'rate/s':>8} {'run':>8}  " + " ".join(f"{k:>12}" for k in keys))
        for (kind, rate), rows in details.items():
            cells = (statistics.median(row[k] for row in rows) for k in keys)
            print(f"{rate:>8,.0f} {kind:>8}  " + " ".join(f"{c:>12.2f}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())

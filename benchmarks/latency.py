"""Latency of clusterduck against raw pyzmq: spout -> w1 -> w2 -> sink, paced.

    python benchmarks/latency.py [--rates 1000,10000,50000] [--seconds 2] [--rounds 3]
                                 [--security auto]  # or none,auto,curve to compare

Both pipelines are four OS processes over tcp loopback. The raw one sends one pickled
message per frame through PUSH/PULL; the clusterduck one is ``benchmarks/latency.yaml``
run by ``clusterduck.testing.run_processes``. Every message carries ``time.monotonic()``
taken just before ``dispatch`` (raw: before ``send``); the sink takes the difference when
it is called. The first 10% of each run is warm-up and not counted. Rounds interleave raw
and clusterduck at every rate; the figures are medians over rounds of each run's p50/p99.
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent


def _raw_spout(n: int, rate: float, port: int) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)  # the slow joiner
    dumps, interval = pickle.dumps, 1.0 / rate
    began = time.monotonic()
    for i in range(n):
        due = began + i * interval
        while (now := time.monotonic()) < due:
            if due - now > 0.0002:
                time.sleep(due - now - 0.0001)
        push.send(dumps((i, time.monotonic())))
    push.send(b"")
    push.close(linger=-1)
    ctx.term()


def _raw_worker(out_port: int, ports: Any) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{out_port}")
    ports.put(port)
    loads, dumps = pickle.loads, pickle.dumps
    while True:
        data = pull.recv()
        if data == b"":
            push.send(b"")
            break
        seq, value = loads(data)
        push.send(dumps((seq, value)))
    pull.close(linger=0)
    push.close(linger=-1)
    ctx.term()


def _raw_sink(ports: Any, out: str) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    ports.put(pull.bind_to_random_port("tcp://127.0.0.1"))
    lat = array.array("d")
    loads = pickle.loads
    while True:
        data = pull.recv()
        if data == b"":
            break
        _, stamp = loads(data)
        lat.append(time.monotonic() - stamp)
    with open(out, "wb") as f:
        lat.tofile(f)
    pull.close(linger=0)
    ctx.term()


def _read(path: Path) -> list[float]:
    lat = array.array("d")
    lat.frombytes(path.read_bytes())
    return list(lat)


def run_raw(n: int, rate: float) -> list[float]:
    mpc = mp.get_context("spawn")
    ports: Any = mpc.Queue()
    with tempfile.TemporaryDirectory(prefix="clusterduck-lat-") as tmp:
        out = str(Path(tmp, "latency"))
        procs = [mpc.Process(target=_raw_sink, args=(ports, out))]
        procs[0].start()
        port = ports.get(timeout=30)
        for _ in range(2):
            procs.append(mpc.Process(target=_raw_worker, args=(port, ports)))
            procs[-1].start()
            port = ports.get(timeout=30)
        procs.append(mpc.Process(target=_raw_spout, args=(n, rate, port)))
        procs[-1].start()
        for proc in procs:
            proc.join(600)
        return _read(Path(out))


def run_clusterduck(n: int, rate: float, security: str = "auto") -> list[float]:
    from clusterduck.loader import load
    from clusterduck.testing import run_processes

    with tempfile.TemporaryDirectory(prefix="clusterduck-lat-") as stamps:
        env = {
            **os.environ,
            "MESSAGES": str(n),
            "STAMPS": stamps,
            "RATE": str(rate),
            "SECURITY": security,
        }
        result = run_processes(load(HERE / "latency.yaml", environ=env), timeout=600)
        if result.status.state.value != "finished":
            raise SystemExit(f"clusterduck run ended {result.status.state.value}")
        return _read(Path(stamps, "latency"))


def percentiles(lat: list[float], n: int) -> tuple[float, float]:
    if len(lat) != n:
        raise SystemExit(f"expected {n} latencies, got {len(lat)}")
    kept = sorted(lat[n // 10 :])
    return kept[len(kept) // 2] * 1000, kept[int(len(kept) * 0.99)] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000,50000")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--security", default="auto", help="comma-separated security settings of clusterduck"
    )
    args = parser.parse_args(argv)
    securities = [s for s in args.security.split(",") if s]
    rates = [float(r) for r in args.rates.split(",")]
    print(
        f"spout -> w1 -> w2 -> sink, 4 processes, tcp loopback, {os.cpu_count()} CPUs, "
        f"{args.seconds:g}s per run, median of {args.rounds} interleaved rounds (ms)"
    )
    results: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for rate in rates:
            n = int(rate * args.seconds)
            results.setdefault(("raw", rate), []).append(percentiles(run_raw(n, rate), n))
            for security in securities:
                lat = run_clusterduck(n, rate, security)
                results.setdefault((security, rate), []).append(percentiles(lat, n))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

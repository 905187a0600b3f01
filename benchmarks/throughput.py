"""Throughput of clusterduck against a hand-written pyzmq pipeline of the same shape.

    python benchmarks/throughput.py [--messages 200000] [--serializer pickle]
                                    [--security none,auto,curve] [--repeat 5]

Runs of spout -> worker -> worker -> sink, one OS process each:

a. raw pyzmq, PUSH/PULL over tcp loopback, one pickle (and one frame) per message;
b. raw pyzmq, PUSH/PULL over tcp loopback, 100 messages per pickled frame;
c. clusterduck (``benchmarks/pipeline.yaml`` through ``clusterduck.testing.run_processes``)
   once per ``security`` value: ``none`` (plain tcp loopback), ``auto`` (one machine: ipc
   sockets in a 0700 directory), ``curve`` (CurveZMQ over tcp loopback).

The pipelines run in interleaved rounds (a, b, then every c, again and again) so that the
noise of a shared machine hits them alike; the median of the rounds is reported.

Every run measures the wall time from the spout's first send to the sink having all N
messages (``time.monotonic()`` in the processes themselves), so process start-up, the
clusterduck handshakes and shutdown are not counted. Messages are ``(i, "x")``; workers
call an identity function per message.
"""

from __future__ import annotations

import argparse
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
BATCH = 100


# -- raw pyzmq -----------------------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def _bind_pull(ctx: zmq.Context) -> tuple[zmq.Socket, int]:
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    return pull, port


def _raw_spout(n: int, batch: int, port: int, report: Any) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    dumps = pickle.dumps
    report.put(("start", time.monotonic()))
    if batch == 1:
        for i in range(n):
            push.send(dumps((i, (i, "x"))))
    else:
        for start in range(0, n, batch):
            push.send(dumps([(i, (i, "x")) for i in range(start, min(n, start + batch))]))
    push.send(b"")  # end of stream: every stage forwards it, then exits
    push.close(linger=-1)
    ctx.term()


def _raw_worker(batch: int, out_port: int, ports: Any) -> None:
    ctx = zmq.Context()
    pull, port = _bind_pull(ctx)
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{out_port}")
    ports.put(port)
    loads, dumps, recv, send, fn = pickle.loads, pickle.dumps, pull.recv, push.send, _identity
    while True:
        data = recv()
        if data == b"":  # end of stream
            push.send(b"")
            break
        if batch == 1:
            seq, value = loads(data)
            send(dumps((seq, fn(value))))
        else:
            send(dumps([(seq, fn(value)) for seq, value in loads(data)]))
    pull.close(linger=0)
    push.close(linger=-1)
    ctx.term()


def _raw_sink(n: int, batch: int, ports: Any, report: Any) -> None:
    ctx = zmq.Context()
    pull, port = _bind_pull(ctx)
    ports.put(port)
    loads, recv = pickle.loads, pull.recv
    seen = 0
    while seen < n:
        data = loads(recv())
        seen += 1 if batch == 1 else len(data)
    report.put(("end", time.monotonic()))
    report.put(("count", seen))
    pull.recv()  # the end-of-stream marker
    pull.close(linger=0)
    ctx.term()


def run_raw(n: int, batch: int) -> float:
    """Seconds from first send to the sink holding all n messages."""
    mpc = mp.get_context("spawn")
    ports: Any = mpc.Queue()
    report: Any = mpc.Queue()
    procs = [mpc.Process(target=_raw_sink, args=(n, batch, ports, report))]
    procs[0].start()
    port = ports.get(timeout=30)
    for _ in range(2):  # the second worker, then the first
        procs.append(mpc.Process(target=_raw_worker, args=(batch, port, ports)))
        procs[-1].start()
        port = ports.get(timeout=30)
    procs.append(mpc.Process(target=_raw_spout, args=(n, batch, port, report)))
    procs[-1].start()
    got: dict[str, float] = {}
    while len(got) < 3:
        key, value = report.get(timeout=600)
        got[key] = value
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if got["count"] != n:
        raise SystemExit(f"raw pipeline delivered {got['count']} of {n} messages")
    return got["end"] - got["start"]


# -- clusterduck ---------------------------------------------------------------------------


def run_clusterduck(n: int, serializer: str, security: str = "auto") -> tuple[float, float]:
    """(seconds first dispatch -> last message at the sink, seconds of the whole run)."""
    from clusterduck.loader import load
    from clusterduck.testing import run_processes

    with tempfile.TemporaryDirectory(prefix="clusterduck-bench-") as stamps:
        env = {
            **os.environ,
            "MESSAGES": str(n),
            "STAMPS": stamps,
            "SERIALIZER": serializer,
            "SECURITY": security,
        }
        tf = load(HERE / "pipeline.yaml", environ=env)
        began = time.monotonic()
        result = run_processes(tf, timeout=600)
        whole = time.monotonic() - began
        if result.status.state.value != "finished":
            raise SystemExit(f"clusterduck run ended {result.status.state.value}")
        count = int(Path(stamps, "count").read_text())
        if count != n:
            raise SystemExit(f"clusterduck delivered {count} of {n} messages")
        start = float(Path(stamps, "start").read_text())
        end = float(Path(stamps, "end").read_text())
    return end - start, whole


# -- report --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", "-n", type=int, default=200_000)
    parser.add_argument(
        "--serializer",
        default="pickle",
        choices=["pickle", "msgpack", "json"],
        help="clusterduck's serializer (the raw pipelines always pickle)",
    )
    parser.add_argument(
        "--security",
        default="none,auto,curve",
        help="comma-separated security settings to run clusterduck with",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="interleaved rounds; the median is reported"
    )
    args = parser.parse_args(argv)
    n, repeat = args.messages, args.repeat
    securities = [s for s in args.security.split(",") if s]
    print(
        f"{n:,} messages (i, 'x'), spout -> worker -> worker -> sink, 4 processes, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"pyzmq {zmq.__version__}; median of {repeat} interleaved rounds"
    )
    rates: dict[str, list[float]] = {}
    wholes: dict[str, list[float]] = {}
    for _ in range(repeat):
        rates.setdefault("raw1", []).append(n / run_raw(n, 1))
        rates.setdefault("raw", []).append(n / run_raw(n, BATCH))
        for security in securities:
            seconds, whole = run_clusterduck(n, args.serializer, security)
            rates.setdefault(security, []).append(n / seconds)
            wholes.setdefault(security, []).append(whole)
    med = {key: statistics.median(values) for key, values in rates.items()}
    print(f"  raw pyzmq, 1 message/frame, tcp     {med['raw1']:>12,.0f} msgs/s")
    print(f"  raw pyzmq, {BATCH} messages/frame, tcp {med['raw']:>12,.0f} msgs/s")
    for security in securities:
        label = f"clusterduck ({args.serializer}, security {security})"
        print(
            f"  {label:<44}{med[security]:>12,.0f} msgs/s   "
            f"{med[security] / med['raw']:.2f}x raw batched   "
            f"(whole run {statistics.median(wholes[security]):.2f}s)"
        )
    if "none" in med:
        for security in securities:
            if security != "none":
                ratio = med[security] / med["none"]
                print(f"  security {security} / security none{'':<15}{ratio:>12.2f}x")
    print(
        "  rounds (msgs/s): "
        + "; ".join(
            f"{key} " + ", ".join(f"{v:,.0f}" for v in values) for key, values in rates.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""This checkout against another clusterduck source tree, in the same interleaved rounds.

    python benchmarks/compare.py SOURCE_TREE [--rounds 4] [--messages 1000000]
                                 [--rates 1000,10000] [--seconds 2]

Make SOURCE_TREE with ``git archive <commit> clusterduck | tar -x -C SOURCE_TREE``. On a
shared machine a single pipeline's rate says more about the neighbours than about the
code, so every round runs both trees (and, for latency, raw pyzmq) one after the other,
and besides the rate this reports the **CPU time per message** of the topology's four
processes (every thread, read from ``/proc`` while they run, start-up included), which
the neighbours move far less.

* throughput: ``benchmarks/pipeline.yaml`` (as ``throughput.py``), ``--messages`` each;
* latency: ``benchmarks/latency.yaml`` (as ``latency.py``) at each of ``--rates``.

Each run is a child interpreter started outside the checkout with ``PYTHONPATH`` set to
the tree it measures (from inside it, ``-c`` would import the checkout's own package).
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
HZ = os.sysconf("SC_CLK_TCK")

THROUGHPUT = """
import sys
sys.path.insert(0, {here!r})
import throughput
seconds, _ = throughput.run_clusterduck(int(sys.argv[1]), "pickle", "auto")
print(int(sys.argv[1]) / seconds)
"""
LATENCY = """
import sys
sys.path.insert(0, {here!r})
import latency
rate = float(sys.argv[1]); n = int(rate * float(sys.argv[2]))
lat = latency.run_raw(n, rate) if sys.argv[3] == "raw" else latency.run_clusterduck(n, rate)
print(*latency.percentiles(lat, n))
"""


def _tagged_pids(tag: str) -> list[int]:
    """The topology's component processes of one run (they inherit the tag)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # A process started by `python -m`, or forked by a host's fork server (its
            # command line is the supervisor's; its name is ``cd <component>/<index>``).
            comm = Path(f"/proc/{entry}/comm").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"clusterduck.runtime.process" not in cmdline and not comm.startswith("cd "):
                continue
            if tag.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def _name(pid: int) -> str:
    """The component instance a process runs (``numbers/0``), from its name or command."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)
    return comm[3:] if comm.startswith("cd ") else str(pid)


def _child(
    code: str, args: list[str], tree: Path, workdir: str
) -> tuple[str, float, dict[str, float]]:
    """Run one measurement; returns its output and the CPU seconds its topology used, in
    all and per process (by component instance)."""
    tag = f"cd-compare-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(tree), "CD_COMPARE_TAG": tag}
    proc = subprocess.Popen(
        [sys.executable, "-c", code.format(here=str(HERE)), *args],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        text=True,
    )
    last: dict[int, float] = {}
    names: dict[int, str] = {}
    while proc.poll() is None:
        for pid in _tagged_pids(tag):
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                last[pid] = cpu
                if pid not in names:
                    names[pid] = _name(pid)
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"a run of {tree} failed (exit {proc.returncode})")
    per: dict[str, float] = {}
    for pid, seconds in last.items():
        per[names[pid]] = per.get(names[pid], 0.0) + seconds
    return out, sum(last.values()), per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path, help="the other clusterduck source tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    trees = {"this checkout": CHECKOUT, str(args.tree): args.tree.resolve()}
    rates = [r for r in args.rates.split(",") if r]
    n = args.messages
    rate: dict[str, list[float]] = {t: [] for t in trees}
    cpu: dict[str, list[float]] = {t: [] for t in trees}
    parts: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    lat: dict[tuple[str, str], list[tuple[float, float]]] = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="cd-compare-") as workdir:
        for _ in range(args.rounds):
            for label, tree in trees.items():
                out, seconds, per = _child(THROUGHPUT, [str(n)], tree, workdir)
                rate[label].append(float(out))
                cpu[label].append(seconds / n * 1e6)
                for name, part in per.items():
                    parts[label].setdefault(name, []).append(part / n * 1e6)
            for r in rates:
                for label, tree in [("raw pyzmq", CHECKOUT), *trees.items()]:
                    kind = "raw" if label == "raw pyzmq" else "duck"
                    out, _, _ = _child(LATENCY, [r, str(args.seconds), kind], tree, workdir)
                    p50, p99 = map(float, out.split())
                    lat.setdefault((label, r), []).append((p50, p99))
            load.append(os.getloadavg()[0])
    print(
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, load average "
        f"{min(load):.1f}-{max(load):.1f}; medians"
    )
    print(f"throughput, {n:,} messages: msgs/s, CPU microseconds per message (4 processes)")
    for label in trees:
        print(
            f"  {label:<40} {statistics.median(rate[label]):>10,.0f} msgs/s "
            f"{statistics.median(cpu[label]):>8.2f} us/msg   "
            f"rounds {', '.join(f'{c:.2f}' for c in cpu[label])}"
        )
        print(
            "  " * 3
            + ", ".join(
                f"{name} {statistics.median(v):.2f}" for name, v in sorted(parts[label].items())
            )
        )
    for r in rates:
        print(f"latency at {float(r):,.0f} msgs/s: p50 / p99 ms")
        for label in ["raw pyzmq", *trees]:
            values = lat[(label, r)]
            p50 = statistics.median(v[0] for v in values)
            p99 = statistics.median(v[1] for v in values)
            print(f"  {label:<40} {p50:>8.2f} {p99:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

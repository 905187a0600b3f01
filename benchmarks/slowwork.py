"""Slow work shared between instances: 600 messages through a worker that sleeps 10 ms.

    python benchmarks/slowwork.py [--messages 600] [--rounds 3]

``benchmarks/slowwork.yaml`` (spout -> sleepy worker -> sink) runs at ``parallelism: 1``
and ``4``, rounds interleaved; each run is timed from the spout's first dispatch to the
sink holding every message. The ideal speedup is 4x (the work is a sleep, like an I/O
call, so two CPUs do not limit it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(n: int, parallelism: int) -> float:
    from clusterduck.loader import load
    from clusterduck.testing import run_processes

    with tempfile.TemporaryDirectory(prefix="clusterduck-slow-") as stamps:
        env = {**os.environ, "MESSAGES": str(n), "STAMPS": stamps, "PARALLELISM": str(parallelism)}
        result = run_processes(load(HERE / "slowwork.yaml", environ=env), timeout=600)
        if result.status.state.value != "finished":
            raise SystemExit(f"clusterduck run ended {result.status.state.value}")
        start = float(Path(stamps, "start").read_text())
        return float(Path(stamps, "end").read_text()) - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", "-n", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    one, four = [], []
    for _ in range(args.rounds):
        one.append(run(args.messages, 1))
        four.append(run(args.messages, 4))
    t1, t4 = statistics.median(one), statistics.median(four)
    print(f"{args.messages} x 10 ms sleep, median of {args.rounds} interleaved rounds")
    print(f"  speedup parallelism 4 vs 1   {t1 / t4:>6.2f}x   (ideal 4x)")
    print(f"  parallelism 1                {t1:>6.2f} s")
    print(f"  parallelism 4                {t4:>6.2f} s   (ideal {t1 / 4:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

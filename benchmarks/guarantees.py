"""What the delivery guarantees cost: the 3-stage pipeline of benchmarks/throughput.py,
in one run, with each guarantee (README "Guarantees").

    python benchmarks/guarantees.py [--messages 100000] [--rounds 3]

Per round, interleaved (the machine is shared and noisy, so the figures are medians of
rounds and are read as ratios):

a. raw pyzmq, 100 messages per frame (the reference of benchmarks/throughput.py);
b. clusterduck, at-most-once (the default);
c. clusterduck, at-least-once (spout keeps every batch until the sink is done);
d. clusterduck, at-most-once with a sequential sink (what sequencing itself costs);
e. clusterduck, at-least-once with a *sequential* sink, which saves its cursor in the run
   directory (fsync on its measured interval) and acknowledges only saved ids.

Targets (issue 9): c/b >= 0.5; e/c >= 0.8 (the saved cursor costs under 20 %).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import BATCH, run_clusterduck, run_raw  # noqa: E402

VARIANTS = {
    "at-most-once": {"GUARANTEE": "at-most-once", "SEQUENTIAL": "false"},
    "at-least-once": {"GUARANTEE": "at-least-once", "SEQUENTIAL": "false"},
    "at-most-once, sequential sink": {"GUARANTEE": "at-most-once", "SEQUENTIAL": "true"},
    "at-least-once, sequential sink (saved cursor)": {
        "GUARANTEE": "at-least-once",
        "SEQUENTIAL": "true",
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", "-n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.messages
    rates: dict[str, list[float]] = {"raw": [], **{k: [] for k in VARIANTS}}
    for r in range(args.rounds):
        rates["raw"].append(n / run_raw(n, BATCH))
        for label, env in VARIANTS.items():
            os.environ.update(env)
            seconds, _ = run_clusterduck(n, "pickle")
            rates[label].append(n / seconds)
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{n:,} messages, spout -> worker -> worker -> sink, medians of {args.rounds}")
    print(f"  raw pyzmq, {BATCH} messages/frame{'':<24}{med['raw']:>12,.0f} msgs/s")
    for label in VARIANTS:
        print(f"  {label:<48}{med[label]:>12,.0f} msgs/s  ({med[label] / med['raw']:.2f}x raw)")
    amo, alo, amo_seq, seq = (med[k] for k in VARIANTS)
    print(f"  at-least-once / at-most-once{'':<20}{alo / amo:>12.2f}x  (target >= 0.5)")
    print(f"  sequential saved cursor / at-least-once{'':<9}{seq / alo:>12.2f}x  (target >= 0.8)")
    print(
        f"  same, sequential in both{'':<24}{seq / amo_seq / (alo / amo):>12.2f}x"
        "  (the cursor alone: sequencing cost taken out)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

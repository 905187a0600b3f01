"""Start-up costs on one machine: imports, the CLI's own start, a local 10-process `up`.

    python benchmarks/startup.py [--rounds 5] [--compare SOURCE_TREE] [--modes fork,spawn]
        [--no-bytecode-cache]

Prints, as medians over the rounds (interleaved, so a busy neighbour hits every line
alike):

- wall time of ``python -c "import X"`` for the runtime entry points (supervisor,
  process), the CLI, and raw pyzmq as the reference, plus the cumulative import time
  ``python -X importtime`` reports for the module itself;
- a local ``clusterduck up`` (``--detach``: returns once every process is ready) of a
  10-process topology, spout → 4 → 4 → sink, and its ``down``: wall time, the
  machine's CPU-seconds from ``/proc/stat`` (all processes, anyone's), and our own
  processes' CPU-seconds (a cpuacct cgroup: the CLI and everything it starts).

The machine may be shared: wall times and /proc/stat count the neighbours too, so read
the ratios against raw pyzmq and our own CPU-seconds. ``--compare`` runs another source
tree (``git archive <commit> clusterduck | tar -x -C DIR``) in the same rounds.
``--modes`` runs this checkout once per way of starting processes (``fork``: the
supervisor's fork server, the default; ``spawn``: a fresh interpreter per process,
``CLUSTERDUCK_START=spawn``), in the same rounds.

Bytecode: an installed package has its ``.pyc`` files; with ``PYTHONDONTWRITEBYTECODE``
set (as on some shared machines) every start compiles clusterduck from source, about
0.4 CPU-s for the CLI alone. So the commands run with a bytecode cache of their own
(``PYTHONPYCACHEPREFIX`` in the temporary directory, filled by an unmeasured first
round) unless ``--no-bytecode-cache`` keeps the environment as it is.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cpu import CpuGroup, machine_cpu_seconds  # noqa: E402

MODULES = {
    "raw pyzmq (reference)": "zmq",
    "runtime.supervisor": "clusterduck.runtime.supervisor",
    "runtime.process": "clusterduck.runtime.process",
    "clusterduck.cli": "clusterduck.cli",
}

TOPOLOGY = """name: bench10
code: code
spouts:
  - name: src
    entry: parts:numbers
workers:
  - name: a
    entry: parts:same
    inputs: [src]
    parallelism: 4
  - name: b
    entry: parts:same
    inputs: [a]
    parallelism: 4
  - name: sink
    entry: parts:sink
    inputs: [b]
"""

# The components, one file shared with the other start-up benchmark.
PARTS = HERE / "startup_parts" / "parts.py"


def import_wall(module: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"import {module}"], check=True, env=env, cwd=env["CLUSTERDUCK_HOME"]
    )
    return time.perf_counter() - start


def importtime_us(module: str, env: dict[str, str]) -> int:
    """Cumulative microseconds ``-X importtime`` reports for ``module`` itself."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=env["CLUSTERDUCK_HOME"],
    ).stderr
    for line in reversed(err.splitlines()):
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    return -1


def cli(env: dict[str, str], group: CpuGroup, *args: str) -> tuple[float, float, float]:
    """(wall s, machine CPU-s, our processes' CPU-s) of one CLI command, which must succeed."""
    own0, cpu0, start = group.seconds(), machine_cpu_seconds(), time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "clusterduck", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=group.join,
        cwd=env["CLUSTERDUCK_HOME"],
    )
    wall, cpu = time.perf_counter() - start, machine_cpu_seconds() - cpu0
    if result.returncode != 0:
        raise SystemExit(f"clusterduck {' '.join(args)} failed:\n{result.stderr}")
    return wall, cpu, group.seconds() - own0


STARTED = re.compile(r"^(\S+ \S+) INFO \[supervisor [^]]*\] started \S+ \(pid \d+\)")


def stages(home: Path, launched: float, returned: float) -> tuple[float, float, float]:
    """Where an ``up`` went, from the newest run's supervisor log (its lines carry wall
    clock times): (launch → first process started, first → last process started,
    last process started → ``up`` returned: the processes' own start, wire, start,
    the status table and the CLI's exit)."""
    runs = sorted((home / "runs" / "bench10").iterdir(), key=lambda p: int(p.name))
    times = []
    for line in (runs[-1] / "supervisor.log").read_text().splitlines():
        match = STARTED.match(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times.append(when.timestamp())
    if not times:
        return (float("nan"),) * 3  # type: ignore[return-value]
    return times[0] - launched, times[-1] - times[0], returned - times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="SOURCE_TREE",
        help="also run this clusterduck source tree (via PYTHONPATH), rounds interleaved",
    )
    parser.add_argument(
        "--modes",
        default="fork",
        help="comma-separated ways to start processes for this checkout: fork, spawn",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as the environment has it (no .pyc cache)",
    )
    args = parser.parse_args()

    variants: dict[str, dict[str, str]] = {}
    for mode in args.modes.split(","):
        variants[f"this checkout ({mode})"] = {**os.environ, "CLUSTERDUCK_START": mode}
    if args.compare is not None:
        variants[str(args.compare)] = {**os.environ, "PYTHONPATH": str(args.compare.resolve())}
    walls = {v: {name: [] for name in MODULES} for v in variants}
    cumulative = {v: {name: [] for name in MODULES} for v in variants}
    runs = {v: {"up": [], "down": []} for v in variants}
    parts: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    load_before = os.getloadavg()[0]
    group = CpuGroup("cd-bench-startup")
    try:
        with tempfile.TemporaryDirectory(prefix="cd-bench-startup-") as tmp:
            root = Path(tmp)
            (root / "code").mkdir()
            (root / "code" / "parts.py").write_text(PARTS.read_text())
            (root / "bench10.yaml").write_text(TOPOLOGY)
            # Commands run from here: in this checkout, `-c`/`-m` would import its
            # clusterduck/ before the one on PYTHONPATH (--compare).
            (root / "home").mkdir()
            if not args.no_bytecode_cache:
                for base in variants.values():
                    base.pop("PYTHONDONTWRITEBYTECODE", None)
                    base["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
            for round_ in range(args.rounds + (0 if args.no_bytecode_cache else 1)):
                warm_up = round_ == 0 and not args.no_bytecode_cache
                for label, base in variants.items():
                    env = {**base, "CLUSTERDUCK_HOME": str(root / "home")}
                    for name, module in MODULES.items():
                        wall, cum = import_wall(module, env), importtime_us(module, env)
                        if not warm_up:
                            walls[label][name].append(wall)
                            cumulative[label][name].append(cum)
                    launched = time.time()
                    up = cli(env, group, "up", str(root / "bench10.yaml"))
                    split = stages(root / "home", launched, time.time())
                    down = cli(env, group, "down", "bench10")
                    if not warm_up:
                        runs[label]["up"].append(up)
                        runs[label]["down"].append(down)
                        parts[label].append(split)
    finally:
        group.close()

    print(
        f"bytecode cache: {'none (environment as is)' if args.no_bytecode_cache else 'yes'}; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    for label in variants:
        print(f"== {label}")
        ref = statistics.median(walls[label]["raw pyzmq (reference)"])
        print(f"{'import':32} {'wall s':>8} {'x pyzmq':>8} {'-X importtime s':>16}")
        for name in MODULES:
            wall = statistics.median(walls[label][name])
            cum = statistics.median(cumulative[label][name]) / 1e6
            print(f"{name:32} {wall:8.3f} {wall / ref:8.2f} {cum:16.3f}")
        print(
            f"{'local 10 processes':32} {'wall s':>8} {'CPU-s':>8} {'own CPU-s':>10}"
            f"   (median of {args.rounds})"
        )
        for step, values in runs[label].items():
            wall = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            own = statistics.median(v[2] for v in values)
            print(f"{step:32} {wall:8.2f} {cpu:8.2f} {own:10.2f}")
        print("up, from the supervisor's log (wall s):")
        for i, what in enumerate(
            (
                "launch -> first process started",
                "first -> last (10th) started",
                "last started -> up returned",
            )
        ):
            print(f"  {what:30} {statistics.median(p[i] for p in parts[label]):8.2f}")
        print()


if __name__ == "__main__":
    main()

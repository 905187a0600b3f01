"""`up`, `status` and `down` over many hosts: network namespaces, each with a real sshd.

    flock /tmp/clusterduck-netns.lock python benchmarks/hosts.py [--hosts 1 5 20] [--rounds 3]
        [--compare SOURCE_TREE]   # e.g. `git archive <commit> clusterduck | tar -x -C DIR`

Needs root, ``ip`` and ``sshd`` (the test harness ``tests/netns.py`` builds the hosts:
one namespace, address and sshd per host on one bridge). Run it under the flock above:
the namespaces use a fixed subnet, so only one such run may exist on a machine.

The topology has one worker per host (a spout on h1, ``w`` with one instance on each
host, a sink on the last host). For each host count, per round: ``up`` (returns once
every process is ready), ``status --json``, ``down``; then, once, ``status`` with one
host's cable unplugged (``ip link set … down`` on its switch port): its wall time only.

Reported as medians: wall time; the machine's CPU-seconds (from ``/proc/stat``: every
process of the machine, the neighbours' too) divided by the number of hosts; and our own
processes' CPU-seconds per host (a cpuacct cgroup holding the CLI and every host's sshd,
hence the SSH sessions, supervisors and workers they start). All the hosts share this
machine's cores, so on a busy machine the wall times and even /proc/stat say more about
the neighbours than about clusterduck; our own CPU-seconds per host is the robust
figure (what each real host would pay on its own CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from cpu import CpuGroup, machine_cpu_seconds  # noqa: E402

from tests.netns import Cluster, make_ssh_home, skip_reason  # noqa: E402

# The components, one file shared with the other start-up benchmark.
PARTS = HERE / "startup_parts" / "parts.py"


def topology(cluster: Cluster, n: int, name: str, python: str) -> str:
    hosts = cluster.hosts[:n]
    lines = [f"name: {name}", "code: code", "hosts:"]
    for h in hosts:
        lines += [
            f"  {h.name}:",
            f"    address: {h.name}",
            f"    python: {python}",
            f"    workdir: {h.workdir}",
        ]
    names = ", ".join(h.name for h in hosts)
    lines += [
        "spouts:",
        "  - name: src",
        "    entry: parts:numbers",
        f"    host: {hosts[0].name}",
        "workers:",
        "  - name: w",
        "    entry: parts:same",
        "    inputs: [src]",
        f"    parallelism: {n}",
        f"    host: [{names}]",
        "  - name: sink",
        "    entry: parts:sink",
        "    inputs: [w]",
        f"    host: {hosts[-1].name}",
    ]
    return "\n".join(lines) + "\n"


Figures = tuple[float, float, float]  # wall s, machine CPU-s, our processes' CPU-s
GROUP: CpuGroup | None = None


def run(env: dict[str, str], *args: str) -> Figures | None:
    """Wall time and CPU-seconds of one CLI command; None when it failed."""
    assert GROUP is not None
    own0, cpu0, start = GROUP.seconds(), machine_cpu_seconds(), time.perf_counter()
    # cwd: not this checkout, whose clusterduck/ `-m` would import before PYTHONPATH's.
    result = subprocess.run(
        [sys.executable, "-m", "clusterduck", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=GROUP.join,
        cwd=env["HOME"],
    )
    wall, cpu = time.perf_counter() - start, machine_cpu_seconds() - cpu0
    own = GROUP.seconds() - own0
    if result.returncode != 0:
        print(
            f"  clusterduck {' '.join(args)} failed after {wall:.1f}s: "
            f"{result.stderr.strip()[-300:]}",
            file=sys.stderr,
            flush=True,
        )
        return None
    return wall, cpu, own


def variant_env(
    base: dict[str, str], source: Path | None, root: Path
) -> tuple[dict[str, str], str]:
    """Environment and remote interpreter for this checkout, or for another source tree.

    Another tree (``--compare``, e.g. ``git archive <commit>`` unpacked) runs through
    PYTHONPATH; the hosts get a wrapper interpreter that sets it, since SSH does not
    carry the variable over."""
    if source is None:
        return base, sys.executable
    wrapper = root / f"python-{source.name}"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={source} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return {**base, "PYTHONPATH": str(source)}, str(wrapper)


def median(values: list[Figures | None], n: int) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return f"{'failed':>8}"
    wall = statistics.median(v[0] for v in done)
    cpu = statistics.median(v[1] for v in done) / n
    own = statistics.median(v[2] for v in done) / n
    failed = len(values) - len(done)
    return f"{wall:8.2f} {cpu:11.2f} {own:11.2f}" + (
        f"   ({failed} of {len(values)} failed)" if failed else ""
    )


@contextmanager
def bench_hosts(
    count: int, own_homes: bool, name: str
) -> Iterator[tuple[Cluster, CpuGroup, Path, dict[str, str]]]:
    """``count`` namespace hosts whose sshds (so the sessions, supervisors and workers
    they start) count in one CPU group, and a temporary root with the code and an SSH
    home: ``(cluster, group, root, env)`` for the client commands."""
    group = CpuGroup(name)
    cluster = Cluster(count=count, own_homes=own_homes).start()
    for host in cluster.hosts:
        assert host.sshd is not None
        group.add(host.sshd.pid)  # `ip netns exec` execs sshd -D: the same pid
    try:
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
            root = Path(tmp)
            home = make_ssh_home(cluster, root / "home")
            (root / "code").mkdir()
            (root / "code" / "parts.py").write_text(PARTS.read_text())
            env = {**os.environ, "HOME": str(home.home), "CLUSTERDUCK_HOME": str(root / "state")}
            env.pop("SSH_AUTH_SOCK", None)
            yield cluster, group, root, env
    finally:
        cluster.close()
        group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--own-homes",
        action="store_true",
        help="give each host's SSH sessions an empty home of its own (as a fresh account): "
        "the remote shell then reads none of this machine's rc files (here root's "
        "~/.bashrc runs `pyenv init` for every SSH command)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="SOURCE_TREE",
        help="also run this clusterduck source tree, rounds interleaved",
    )
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        raise SystemExit(reason)

    global GROUP
    with bench_hosts(max(args.hosts), args.own_homes, "cd-bench-hosts") as (
        cluster,
        GROUP,
        root,
        base,
    ):
        variants = {"this checkout": variant_env(base, None, root)}
        if args.compare is not None:
            variants[str(args.compare)] = variant_env(base, args.compare.resolve(), root)
        print(
            f"{'variant':20} {'hosts':>5} {'step':24} {'wall s':>8} {'CPU-s/host':>11} "
            f"{'own CPU-s/h':>11}   (median of {args.rounds}; unreachable: 1 run, "
            "wall only)",
            flush=True,
        )
        for n in args.hosts:
            steps: dict[str, dict[str, list[Figures | None]]] = {
                v: {"up": [], "status": [], "down": [], "status, 1 unreachable": []}
                for v in variants
            }
            for _ in range(args.rounds):
                for label, (env, python) in variants.items():
                    name = f"bench{n}"
                    path = root / f"{name}.yaml"
                    path.write_text(topology(cluster, n, name, python))
                    steps[label]["up"].append(run(env, "up", str(path)))
                    steps[label]["status"].append(run(env, "status", name, "--json"))
                    steps[label]["down"].append(run(env, "down", name))
                    run(env, "down", name, "--force")  # whatever a failure left
            for label, (env, python) in variants.items():
                name = f"bench{n}"
                path = root / f"{name}.yaml"
                path.write_text(topology(cluster, n, name, python))
                if run(env, "up", str(path)) is not None:
                    victim = cluster.hosts[n - 1]
                    victim.link_down()
                    try:
                        start = time.perf_counter()
                        subprocess.run(
                            [sys.executable, "-m", "clusterduck", "status", name, "--json"],
                            env=env,
                            capture_output=True,
                            timeout=600,
                            cwd=env["HOME"],
                        )
                        steps[label]["status, 1 unreachable"].append(
                            (time.perf_counter() - start, 0.0, 0.0)
                        )
                    finally:
                        victim.link_up()
                run(env, "down", name, "--force")
            for label in variants:
                for step, values in steps[label].items():
                    print(f"{label[-20:]:20} {n:5d} {step:24} {median(values, n)}", flush=True)


if __name__ == "__main__":
    main()

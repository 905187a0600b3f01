"""Where the CPU of one `up` over N namespace hosts goes, process by process.

    flock /tmp/clusterduck-netns.lock python benchmarks/host_breakdown.py [--hosts 20]

Needs root, ``ip``, ``sshd`` (as benchmarks/hosts.py) and BSD process accounting
(``accton``, Debian package ``acct``). One warm-up ``up``/``down`` first (bytecode), then
process accounting is switched on for one ``up``: every process that ended during it is
in the accounting file (pid, parent, CPU); those still running when ``up`` returned
(supervisors, fork servers, workers) are read from ``/proc``. Each is put in a row by
its command name and its place in the tree (the CLI, an sshd's children), and the rows
are printed as CPU-seconds per host. Accounting counts in 10 ms ticks per process, so
the rows of many short processes are slight underestimates; the cgroup total (every
process of the run, exact) is printed beside them.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from hosts import bench_hosts, topology  # noqa: E402

from tests.netns import Cluster, skip_reason  # noqa: E402

_TICK = 100.0  # acct's AHZ and /proc's USER_HZ on Linux


class Proc:
    def __init__(self, pid: int, ppid: int, comm: str, cpu: float, live: bool) -> None:
        self.pid, self.ppid, self.comm, self.cpu, self.live = pid, ppid, comm, cpu, live
        self.cmdline = ""


def read_acct(path: Path) -> list[Proc]:
    out = subprocess.run(["dump-acct", str(path)], capture_output=True, text=True, check=True)
    procs = []
    for line in out.stdout.splitlines():
        f = [x.strip() for x in line.split("|")]
        if len(f) < 11:
            continue
        cpu = (float(f[2]) + float(f[3])) / _TICK
        procs.append(Proc(int(f[9]), int(f[10]), f[0], cpu, live=False))
    return procs


def read_live(pids: list[int]) -> list[Proc]:
    procs = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(rest[11]) + int(rest[12])) / _TICK
        proc = Proc(pid, int(rest[1]), comm, cpu, live=True)
        proc.cmdline = cmdline
        procs.append(proc)
    return procs


def namespace_pids(cluster: Cluster, n: int) -> list[int]:
    pids: list[int] = []
    for host in cluster.hosts[:n]:
        out = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True
        ).stdout
        pids += [int(p) for p in out.split()]
    return pids


def classify(procs: list[Proc], client: int, daemons: set[int]) -> dict[str, list[float]]:
    by_pid = {p.pid: p for p in procs}
    rows: dict[str, list[float]] = collections.defaultdict(list)

    def ancestry(p: Proc) -> list[Proc]:
        chain = []
        seen = set()
        while p.ppid in by_pid and p.ppid not in seen:
            seen.add(p.ppid)
            p = by_pid[p.ppid]
            chain.append(p)
        return chain

    for p in procs:
        chain = ancestry(p)
        pids = {q.pid for q in chain} | {p.ppid}
        if p.pid == client:
            label = "client: clusterduck up (python)"
        elif client in pids:
            label = f"client child: {p.comm}"
        elif p.live or pids & daemons:  # live: in a host's namespace
            if p.pid in daemons:
                continue
            if p.comm.startswith("sshd"):
                label = "sshd (per connection: privsep, session)"
            elif p.comm == "cd-forkserver":
                label = "fork server (live)" if p.live else "fork server: intermediate forks (exit)"
            elif p.comm.startswith("cd "):
                label = "component processes (forked)"
            elif "clusterduck.runtime.supervisor" in p.cmdline or (
                not p.live and p.comm.startswith("python")
            ):
                label = (
                    "supervisor (detached, live)"
                    if p.live
                    else "remote python: supervisor starter (exits)"
                )
            else:
                label = f"other under sshd: {p.comm}"
        else:
            continue
        rows[label].append(p.cpu)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--own-homes", action="store_true", help="as in hosts.py")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        raise SystemExit(reason)
    if shutil.which("accton") is None or shutil.which("dump-acct") is None:
        raise SystemExit("needs BSD process accounting: apt-get install acct")
    n = args.hosts
    with bench_hosts(n, args.own_homes, "cd-bench-breakdown") as (cluster, group, root, env):
        daemons = {host.sshd.pid for host in cluster.hosts if host.sshd is not None}
        path = root / "t.yaml"
        path.write_text(topology(cluster, n, "breakdown", sys.executable))
        cli = [sys.executable, "-m", "clusterduck"]

        def cd(*a: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [*cli, *a],
                env=env,
                cwd=env["HOME"],
                preexec_fn=group.join,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

        for step in (("up", str(path)), ("down", "breakdown")):  # warm-up
            proc = cd(*step)
            if proc.wait() != 0:
                raise SystemExit(f"warm-up {step[0]} failed")
        acct = root / "acct"
        acct.touch()
        subprocess.run(["accton", str(acct)], check=True, capture_output=True)
        own0 = group.seconds()
        start = time.perf_counter()
        try:
            up = cd("up", str(path))
            err = up.communicate()[1]
            wall = time.perf_counter() - start
            live = read_live(namespace_pids(cluster, n))
            own = group.seconds() - own0
        finally:
            subprocess.run(["accton", "off"], check=True, capture_output=True)
        if up.returncode != 0:
            raise SystemExit(f"up failed: {err.decode()[-500:]}")
        cd("down", "breakdown").wait()
        procs = read_acct(acct) + live
        rows = classify(procs, up.pid, daemons)
        total = sum(sum(v) for v in rows.values())
        print(
            f"`up` on {n} hosts: {wall:.2f} s wall; cgroup total {own:.2f} CPU-s "
            f"= {own / n:.3f} per host; accounted below {total / n:.3f} per host"
        )
        print(f"{'CPU-s per host':>14} {'procs':>6}  what")
        for label, values in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
            print(f"{sum(values) / n:14.3f} {len(values):6d}  {label}")


if __name__ == "__main__":
    main()

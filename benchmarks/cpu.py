"""CPU-seconds for the benchmarks: the whole machine's, and our own processes' only.

``/proc/stat`` counts every process on the machine, so on a shared machine it includes
the neighbours. A cpuacct cgroup (cgroup v1, root only) counts exactly the processes
put in it and everything they start, wherever it runs (sshd sessions in namespaces,
detached supervisors): that is the robust figure when the machine is busy.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CpuGroup", "machine_cpu_seconds"]

_HZ = os.sysconf("SC_CLK_TCK")
_CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def machine_cpu_seconds() -> float:
    """user + nice + system + irq + softirq + steal of all cores, in seconds."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _HZ


class CpuGroup:
    """A cpuacct cgroup for our processes; ``available`` is False where there is none."""

    def __init__(self, name: str) -> None:
        self.path = _CPUACCT / f"{name}-{os.getpid()}"
        try:
            self.path.mkdir()
            self.available = True
        except OSError:
            self.available = False

    def add(self, pid: int) -> None:
        """Move ``pid`` in; what it starts from now on is counted too."""
        if self.available:
            (self.path / "cgroup.procs").write_text(str(pid))

    def join(self) -> None:
        """For ``preexec_fn``: the child moves itself in before it execs."""
        self.add(os.getpid())

    def seconds(self) -> float:
        if not self.available:
            return float("nan")
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        """Move what is left back to the root group and remove the group."""
        if not self.available:
            return
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (_CPUACCT / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # exited meanwhile
        try:
            self.path.rmdir()
        except OSError:
            pass

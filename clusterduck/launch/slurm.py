"""A Slurm group as a host: the only module that runs sbatch, squeue, scontrol, sacct,
sinfo and scancel.

A group's processes live inside one Slurm job, so the scheduler accounts for, limits and
cleans up every one of them (nobody may leave processes on compute nodes outside a job).
``up`` therefore never SSHes to a node: it submits a batch script with ``sbatch``
(never ``salloc``, which would hold a terminal), follows the job through the queue, and
the script's single ``srun`` step starts one supervisor per allocated node. ``down``
drains through the supervisors as on any host, then ``scancel``s the job.

``SlurmGroup`` implements ``base.HostConnection`` by running commands on this machine
(the submit host): with ``shared_fs: true`` the group's ``workdir`` is the same folder
here and on the nodes, so shipping code, reading logs and ``final.json`` are local file
operations. Each scheduler failure becomes a typed ``SlurmError`` carrying the job id,
the partition and Slurm's own message, plus the fix.
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clusterduck.exceptions import (
    AllocationImpossible,
    AllocationTimeout,
    SlurmError,
    SlurmNotFound,
    SlurmRefused,
)
from clusterduck.launch.base import CommandResult, ShipReport
from clusterduck.launch.local import LocalHost, is_excluded, local_tree

if TYPE_CHECKING:
    from clusterduck.topology import Host

__all__ = ["ENDED", "SlurmGroup", "SlurmJob", "batch_script", "code_archive"]

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
# Job states after which nothing of the job runs any more.
ENDED = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
# Pending reasons that no amount of waiting fixes: the request exceeds what the
# partition or the cluster has, or names something that does not exist.
NEVER = frozenset(
    {
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "AccountNotAllowed",
        "QOSMaxNodePerJobLimit",
        "InvalidAccount",
        "InvalidQOS",
        "PartitionDown",
        "PartitionInactive",
        "ReqNodeNotAvail",
        "NodeDown",
    }
)
_WHY = {
    "PartitionConfig": "the partition cannot hold this request (more nodes, CPUs or time "
    "than it has)",
    "PartitionNodeLimit": "more nodes than the partition allows or has",
    "PartitionTimeLimit": "a longer time limit than the partition allows",
    "BadConstraints": "constraints no node satisfies",
}
POLL = 0.5


@dataclass(frozen=True)
class SlurmJob:
    """One look at a job: its state, why it waits, and where it runs."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, TIMEOUT, … or UNKNOWN when Slurm forgot it
    reason: str = ""
    nodes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ended(self) -> bool:
        return self.state in ENDED or self.state == "UNKNOWN"

    def describe(self) -> str:
        text = f"job {self.job_id} {self.state.lower()}"
        if self.reason and self.reason not in ("None", "(null)"):
            text += f" ({self.reason})"
        if self.nodes and self.state == "RUNNING":
            text += " on " + ",".join(self.nodes)
        return text


class SlurmGroup(LocalHost):
    """A Slurm group, reached through the scheduler from this machine."""

    def __init__(self, name: str, host: Host) -> None:
        super().__init__(name)
        if host.slurm is None:
            raise ValueError(f"host {name!r} is not a Slurm group")
        self.host = host
        self.request = host.slurm
        self._checked = False
        # Set by the CLI's thread on Ctrl-C: a queue wait in another thread gives up.
        self.abort = threading.Event()

    # -- HostConnection ----------------------------------------------------------------

    def connect(self) -> None:
        """Check that this machine can submit jobs (the commands are on the PATH)."""
        if self._checked:
            return
        missing = [cmd for cmd in COMMANDS if shutil.which(cmd) is None]
        if missing:
            raise SlurmNotFound(
                self.name,
                f"{', '.join(missing)} not found on this machine's PATH",
                "run `clusterduck up` on a machine that can submit Slurm jobs (a login "
                "node), or put Slurm's client commands on the PATH (`module load slurm`, "
                "or install slurm-client)",
                partition=self.request.partition,
            )
        self._checked = True
        self.check_request()

    def check_request(self) -> None:
        """``sbatch --test-only``: Slurm judges the request (partition, account, node
        count, time limit) without queueing anything, so a request it refuses, or one
        that can never be granted, fails before anything starts."""
        argv = [a for a in self.sbatch_args("clusterduck-check", "/dev/null") if a != "--parsable"]
        result = self.run([argv[0], "--test-only", *argv[1:], "--wrap", "true"], timeout=60)
        if result.returncode == 0:
            return
        said = (result.stderr or result.stdout).strip()
        cls = (
            AllocationImpossible
            if "node configuration is not available" in said.lower()
            else SlurmRefused
        )
        raise self._error(
            cls,
            f"Slurm refuses the request ({self._request_text()})",
            self._refusal_hint(said),
            said=said,
        )

    def ship(self, local_dir: Path, remote_dir: str) -> ShipReport:
        """With a shared file system, copy the code to the shared workdir once."""
        if not self.host.shared_fs:
            return ShipReport()  # the code travels inside the job script (code_archive)
        return super().ship(local_dir, remote_dir)

    @property
    def resolved_address(self) -> str | None:
        """A node of the partition: where this machine's packets to the group go."""
        nodes = self.partition_nodes()
        return nodes[0] if nodes else None

    # -- the scheduler ---------------------------------------------------------------

    def _slurm(self, argv: list[str], timeout: float = 30.0) -> CommandResult:
        self.connect()
        return self.run(argv, timeout=timeout)

    def _error(
        self,
        cls: type[SlurmError],
        message: str,
        hint: str,
        *,
        job_id: str | None = None,
        said: str = "",
    ) -> SlurmError:
        return cls(
            self.name,
            message,
            hint,
            job_id=job_id,
            partition=self.request.partition,
            scheduler_message=said,
        )

    def partition_nodes(self) -> list[str]:
        """Host names of the nodes of the group's partition (all partitions when none
        is named): Slurm's NodeHostname, which differs from the node name when one
        machine runs several slurmd (as in the tests)."""
        argv = ["sinfo", "-h", "-N", "-o", "%n"]
        if self.request.partition:
            argv += ["-p", self.request.partition]
        result = self.run(argv, timeout=15)
        if result.returncode != 0:
            return []
        return sorted(set(result.stdout.split()))

    def runs_on_this_machine(self) -> bool:
        """True when every node the group could get is this machine (a one-machine
        cluster, as in the tests): then everything is reached over loopback."""
        self.connect()
        nodes = self.partition_nodes()
        return bool(nodes) and all(is_this_machine(n) for n in nodes)

    def hostnames(self, nodelist: str) -> list[str]:
        """``vm[1-3]`` → ``vm1, vm2, vm3`` (Slurm's own expansion)."""
        if not nodelist or nodelist in ("(null)", "None"):
            return []
        result = self.run(["scontrol", "show", "hostnames", nodelist], timeout=15)
        if result.returncode != 0:
            return [nodelist]
        return result.stdout.split()

    def sbatch_args(self, job_name: str, output: str) -> list[str]:
        req = self.request
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={job_name}",
            f"--nodes={req.nodes}",
            "--ntasks-per-node=1",
            f"--output={output}",
            "--open-mode=append",
        ]
        if req.partition:
            argv.append(f"--partition={req.partition}")
        if req.time:
            argv.append(f"--time={req.time}")
        if req.account:
            argv.append(f"--account={req.account}")
        return [*argv, *req.options]

    def submit(self, script: str, job_name: str, output: str) -> str:
        """Submit the batch script; the job id, or SlurmRefused with Slurm's words."""
        argv = self.sbatch_args(job_name, output)
        self.connect()
        result = self.run(argv, stdin=script.encode(), timeout=60)
        said = (result.stderr or result.stdout).strip()
        if result.returncode != 0:
            raise self._error(
                SlurmRefused, "sbatch refused the job", self._refusal_hint(said), said=said
            )
        match = re.match(r"^(\d+)", result.stdout.strip().splitlines()[-1] if result.stdout else "")
        if not match:
            raise self._error(
                SlurmRefused,
                "sbatch printed no job id",
                "check the `options:` of the group",
                said=said,
            )
        return match.group(1)

    def _refusal_hint(self, said: str) -> str:
        low = said.lower()
        if "partition" in low:
            known = self.run(["sinfo", "-h", "-o", "%P"], timeout=15).stdout.split()
            names = ", ".join(sorted({p.rstrip("*") for p in known})) or "none found"
            return (
                f"set hosts.{self.name}.slurm.partition to one of: {names} (`sinfo -s` lists them)"
            )
        if "account" in low or "association" in low:
            return (
                f"set hosts.{self.name}.slurm.account to an account you may charge "
                "(`sacctmgr show associations user=$USER format=account,partition`)"
            )
        if "node configuration is not available" in low or "node count" in low:
            return (
                f"ask for fewer nodes or resources in hosts.{self.name}.slurm "
                "(`sinfo -N -l` shows what exists)"
            )
        if "time limit" in low:
            return f"lower hosts.{self.name}.slurm.time (`sinfo -o '%P %l'` shows the limits)"
        return f"check hosts.{self.name}.slurm (partition, account, time, options)"

    def job(self, job_id: str) -> SlurmJob:
        """The job as squeue sees it, else scontrol (recently ended), else sacct."""
        result = self.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r|%N"], timeout=30)
        line = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        if result.returncode == 0 and line:
            state, reason, nodes = (line.split("|") + ["", ""])[:3]
            return SlurmJob(job_id, state, reason, tuple(self.hostnames(nodes)))
        result = self.run(["scontrol", "show", "job", "-o", job_id], timeout=30)
        if result.returncode == 0 and "JobState=" in result.stdout:
            fields = dict(re.findall(r"(\w+)=(\S*)", result.stdout))
            return SlurmJob(
                job_id,
                fields.get("JobState", "UNKNOWN"),
                fields.get("Reason", ""),
                tuple(self.hostnames(fields.get("NodeList", ""))),
            )
        if shutil.which("sacct"):
            result = self.run(
                ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,Reason,NodeList"], timeout=30
            )
            line = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
            if result.returncode == 0 and line:
                state, reason, nodes = (line.split("|") + ["", ""])[:3]
                # sacct writes "CANCELLED by 0": the state is the first word.
                return SlurmJob(
                    job_id,
                    state.split()[0] if state else "UNKNOWN",
                    reason,
                    tuple(self.hostnames(nodes)),
                )
        return SlurmJob(job_id, "UNKNOWN", "Slurm no longer knows this job")

    def wait_running(
        self, job_id: str, timeout: float | None, progress: Callable[[SlurmJob], None]
    ) -> SlurmJob:
        """Follow the job through the queue until it runs. Cancels it and raises when it
        ends first, when the scheduler says it can never run, or when ``timeout`` runs
        out while it still waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: SlurmJob | None = None
        while True:
            job = self.job(job_id)
            if job != last:
                progress(job)
                last = job
            if job.state == "RUNNING" and job.nodes:
                return job
            if job.ended:
                raise self._error(
                    SlurmError,
                    f"job {job_id} ended before it ran: {job.state} ({job.reason})",
                    "see the job's output in the group's workdir",
                    job_id=job_id,
                    said=job.reason,
                )
            if job.state == "PENDING" and job.reason in NEVER:
                self.cancel(job_id)
                why = _WHY.get(job.reason, "the request can never be granted")
                raise self._error(
                    AllocationImpossible,
                    f"job {job_id} can never start: {why}; it was cancelled",
                    f"change hosts.{self.name}.slurm ({self._request_text()}); "
                    "`sinfo -N -l` shows the nodes that exist",
                    job_id=job_id,
                    said=f"pending, reason {job.reason}",
                )
            if deadline is not None and time.monotonic() >= deadline:
                self.cancel(job_id)
                raise self._error(
                    AllocationTimeout,
                    f"job {job_id} still {job.state.lower()} after {timeout:g}s in the queue; "
                    "it was cancelled",
                    "wait longer (--wait-for-allocation), or ask for less "
                    f"({self._request_text()})",
                    job_id=job_id,
                    said=f"{job.state.lower()}, reason {job.reason}",
                )
            if self.abort.wait(POLL):
                self.cancel(job_id)
                raise KeyboardInterrupt

    def _request_text(self) -> str:
        req = self.request
        parts = [f"nodes={req.nodes}"]
        if req.partition:
            parts.append(f"partition={req.partition}")
        if req.time:
            parts.append(f"time={req.time}")
        return ", ".join(parts)

    def cancel(self, job_id: str, *, wait: float = 30.0) -> SlurmJob:
        """``scancel`` the job and wait (bounded) until it has left the running states,
        so that no process of it is left when this returns."""
        self.run(["scancel", job_id], timeout=30)
        deadline = time.monotonic() + wait
        job = self.job(job_id)
        while not job.ended and time.monotonic() < deadline:
            time.sleep(POLL)
            job = self.job(job_id)
        return job


def is_this_machine(node: str) -> bool:
    names = {
        socket.gethostname(),
        socket.gethostname().split(".")[0],
        socket.getfqdn(),
        "localhost",
    }
    return node in names or node.split(".")[0] in names


def code_archive(code_dir: Path) -> str:
    """The code folder (minus SHIP_EXCLUDES) as base64 tar.gz, for nodes without a
    shared file system: it travels inside the job script."""
    buf = io.BytesIO()
    files, _dirs = local_tree(code_dir)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, info in sorted(files.items()):
            if not is_excluded(rel):
                tar.add(info.path, arcname=rel, recursive=False)
    return base64.b64encode(buf.getvalue()).decode()


def batch_script(python: str, spec_json: str, marker: list[str]) -> str:
    """The job: one ``srun`` step, one task per node, each a supervisor in the foreground
    reading the same spec on stdin (``--input=all``). When the step ends the job ends."""
    argv = [python, "-m", "clusterduck.runtime.supervisor", "--slurm", *marker]
    delimiter = "CLUSTERDUCK_SPEC_END"
    return (
        "#!/bin/bash\n"
        "# Written by clusterduck up: one supervisor per node, inside this job.\n"
        "srun --input=all --ntasks-per-node=1 --kill-on-bad-exit=0 "
        f"{' '.join(shlex.quote(a) for a in argv)} <<'{delimiter}'\n"
        f"{spec_json}\n{delimiter}\n"
    )

"""Slurm groups (issue 15) against a real Slurm on this machine.

``tests/slurm/start_slurm.sh`` starts munged, slurmctld and two slurmd (``node1``,
``node2``: both this machine, reached over loopback; partition ``debug``) with a private
config once per session, and stops them afterwards if it started them. Every test
drives the real CLI (``lifecycle_fixtures.Clusterduck``) and looks at the scheduler
with squeue and at the processes through /proc. Where Slurm's packages are not
installed the tests that need it skip, saying so; the validation tests always run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterduck.exceptions import TopologyError
from clusterduck.loader import load
from clusterduck.protocol import (
    SlurmJobStatus,
    State,
    SupervisorSpec,
    ThisMachine,
    TopologySpec,
    TopologyStatus,
)
from clusterduck.state import HostRecord, TopologyRecord
from clusterduck.topology import Topology
from tests.lifecycle_fixtures import CLI, Clusterduck, interrupt, processes_matching, wait_until

HERE = Path(__file__).resolve().parent / "slurm"
START = HERE / "start_slurm.sh"
SBIN = "/usr/sbin:/usr/local/sbin"


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """SLURM_CONF (and a PATH with the daemons) of a running one-node Slurm."""
    path = f"{os.environ.get('PATH', '')}:{SBIN}"
    missing = [
        b for b in ("sbatch", "slurmctld", "slurmd", "munged") if shutil.which(b, path=path) is None
    ]
    if missing:
        pytest.skip(
            f"Slurm is not installed here (missing {', '.join(missing)}; "
            "apt-get install slurmctld slurmd slurm-client munge)"
        )
    env = {**os.environ, "PATH": path}
    conf = "/tmp/clusterduck-slurm/slurm.conf"
    # Without its config file sinfo retries for a minute: only ask a Slurm that has one.
    already = (
        Path(conf).exists()
        and subprocess.run(
            ["sinfo", "-h"], env={**env, "SLURM_CONF": conf}, capture_output=True, timeout=30
        ).returncode
        == 0
    )
    result = subprocess.run(
        ["bash", str(START), "start"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"start_slurm.sh failed:\n{result.stderr}"
    conf = result.stdout.strip().split("=", 1)[1]
    yield {"SLURM_CONF": conf, "PATH": path}
    if not already:
        subprocess.run(["bash", str(START), "stop"], env=env, timeout=60)


@pytest.fixture
def duck(tmp_path: Path, slurm_env: dict[str, str]) -> Iterator[Clusterduck]:
    cli = Clusterduck(tmp_path)
    cli.env.update(slurm_env)
    try:
        yield cli
    finally:
        cli.cleanup()
        for name in cli.names:
            _cancel_jobs_named(name, slurm_env)


def _squeue(env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(job id, name, state) of every job Slurm still has queued or running."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j|%T"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line]  # type: ignore[misc]


def _jobs_of(name: str, env: dict[str, str]) -> list[tuple[str, str, str]]:
    return [j for j in _squeue(env) if j[1].startswith(f"clusterduck-{name}-")]


def _cancel_jobs_named(name: str, env: dict[str, str]) -> None:
    for job_id, _, _ in _jobs_of(name, env):
        subprocess.run(["scancel", job_id], env={**os.environ, **env}, timeout=30)


def _topology(
    tmp: Path,
    name: str,
    *,
    workers: dict[str, Any] | None = None,
    slurm: dict[str, Any] | None = None,
    spout: str = "sl_parts:count_up",
    out: str = "",
    shared_fs: bool = True,
) -> Path:
    """A spout on this machine → `square` ×2 in the Slurm group → `collect` here."""
    doc: dict[str, Any] = {
        "name": name,
        "code": str(HERE),
        "hosts": {
            "cluster": {
                "slurm": {"nodes": 1, "partition": "debug", "time": "00:10:00", **(slurm or {})},
                "python": sys.executable,
                "workdir": str(tmp / "work"),
                "shared_fs": shared_fs,
            }
        },
        "spouts": [{"name": "numbers", "entry": spout}],
        "workers": [
            {
                "name": "square",
                "entry": "sl_parts:square",
                "inputs": ["numbers"],
                "host": "cluster",
                "parallelism": 2,
                **(workers or {}),
            },
            {
                "name": "collect",
                "entry": "sl_parts:Collect",
                "inputs": ["square"],
                "args": {"out": out},
            },
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- validation (no Slurm needed) ------------------------------------------------------


def test_validate_rejects_bad_slurm_keys_with_located_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "hosts:\n"
        "  cluster:\n"
        "    slurm: {nodes: 0, time: 2h, partiton: batch}\n"
        "    address: node7\n"
        "spouts:\n"
        "  - {name: s, entry: 'sl_parts:count_up'}\n"
        "workers:\n"
        "  - {name: w, entry: 'sl_parts:square', inputs: [s], host: cluster}\n"
    )
    with pytest.raises(TopologyError) as err:
        load(path, import_entries=False)
    found = {(p.line, p.message.split(":")[0]): p for p in err.value.problems}
    text = "\n".join(str(p) for p in err.value.problems)
    assert (4, "nodes") in found, text
    assert (4, "time") in found and "not a Slurm time limit" in text, text
    assert any(
        p.line == 4 and "partiton" in p.message and "'partition'" in p.hint
        for p in err.value.problems
    ), text
    assert any(
        p.line == 5 and "'address' does not apply to a Slurm group" in p.message
        for p in err.value.problems
    ), text


def test_validate_accepts_slurm_time_forms_and_rejects_shared_fs_elsewhere(tmp_path: Path) -> None:
    for ok in ("30", "00:30", "02:00:00", "1-12", "1-12:30:00"):
        Topology.model_validate(
            {
                "name": "t",
                "hosts": {"c": {"slurm": {"time": ok}}},
                "spouts": [{"name": "s", "entry": "m:f", "host": "c"}],
            }
        )
    path = tmp_path / "fs.yaml"
    path.write_text(
        "name: fs\nhosts:\n  box: {address: 10.0.0.1, shared_fs: true}\n"
        "spouts:\n  - {name: s, entry: 'sl_parts:count_up', host: box}\n"
    )
    with pytest.raises(TopologyError) as err:
        load(path, import_entries=False)
    assert [(p.line, "shared_fs" in p.message) for p in err.value.problems] == [(3, True)]


def test_instances_of_a_group_are_spread_over_its_nodes_and_found_again() -> None:
    topo = Topology.model_validate(
        {
            "name": "t",
            "hosts": {"c": {"slurm": {"nodes": 2}}},
            "spouts": [{"name": "s", "entry": "m:f"}],
            "workers": [
                {"name": "w", "entry": "m:g", "inputs": ["s"], "host": "c", "parallelism": 5}
            ],
        }
    )
    record = TopologyRecord(
        name="t",
        file="",
        code_dir="",
        topology={},
        runtime=TopologySpec.from_topology(topo).to_dict(),
    )
    record.hosts["c"] = HostRecord(name="c", remote=True, slurm={"size": 2, "rank": 0})
    record.hosts["c#1"] = HostRecord(name="c#1", remote=True, slurm={"size": 2, "rank": 1})
    holders = [record.holder("w", i) for i in range(5)]
    assert holders == ["c", "c#1", "c", "c#1", "c"]
    assert record.holder("s", 0) == "localhost"
    # The node supervisors agree: each runs exactly the instances recorded under it.
    spec = record.spec
    for key, rank in (("c", 0), ("c#1", 1)):
        sup = SupervisorSpec(spec, "c", "", "", "", "", share=(rank, 2))
        mine = [i for i in range(5) if sup.runs("w", i, "c")]
        assert mine == [i for i in range(5) if holders[i] == key]
        assert not sup.runs("s", 0, "localhost")


def test_the_slurm_parts_of_the_protocol_round_trip() -> None:
    topo = Topology.model_validate(
        {"name": "t", "hosts": {"c": {"slurm": {}}}, "spouts": [{"name": "s", "entry": "m:f"}]}
    )
    spec = SupervisorSpec(
        TopologySpec.from_topology(topo),
        "c",
        "/code",
        "/run",
        "127.0.0.1",
        "127.0.0.1",
        share=(1, 3),
        report_to="tcp://127.0.0.1:5000",
        this_machine=ThisMachine(("box", "box.lan"), "127.0.0.1", "127.0.0.1"),
        code_archive="H4sI",
    )
    assert SupervisorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    job = SlurmJobStatus("42", "PENDING", "Priority", (), "debug")
    assert SlurmJobStatus.from_dict(job.to_dict()) == job
    assert job.describe() == "job 42 pending (Priority) on -"
    # `status --json` has a `slurm` key only for topologies with Slurm groups.
    status = TopologyStatus("t", State.RUNNING, slurm={"c": job})
    assert status.to_dict()["slurm"] == {"c": job.to_dict()}
    assert TopologyStatus.from_dict(json.loads(status.to_json())) == status
    assert "slurm" not in status.replace(slurm={}).to_dict()


# -- against the real scheduler ----------------------------------------------------------


def test_workers_in_a_slurm_group_run_to_completion_with_exact_results(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("squares")
    out = tmp_path / "out.txt"
    path = _topology(tmp_path, name, out=str(out), slurm={"nodes": 2})
    result = duck.run("up", str(path), "--wait", "--wait-for-allocation", "60")
    assert result.returncode == 0, result.stderr + result.stdout
    job_ids = set(re.findall(r"slurm job (\d+) running", result.stderr))
    assert len(job_ids) == 1, result.stderr
    job_id = job_ids.pop()
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [(int(i), int(sq)) for i, sq, _ in lines] == [(i, i * i) for i in range(100)]
    assert {where for _, _, where in lines} <= {f"{job_id}@node1", f"{job_id}@node2"}
    # One supervisor per node, each running its share: square/0 on the first node,
    # square/1 on the second (their logs are in each node's own run folder).
    record = duck.record(name)
    assert {k: h["slurm"]["node"] for k, h in record["hosts"].items() if h["slurm"]} == {
        "cluster": "node1",
        "cluster#1": "node2",
    }
    runs = tmp_path / "work" / "runs" / name / "1"  # run 1: this topology's first `up`
    assert sorted(p.name for p in (runs / "node0" / "logs").iterdir()) == ["square.0.log"]
    assert sorted(p.name for p in (runs / "node1" / "logs").iterdir()) == ["square.1.log"]
    # The supervisors leave when their work is done, and with them the job.
    wait_until(lambda: not _jobs_of(name, duck.env), timeout=30, what="the job to end")
    status = duck.status(name)
    assert status["state"] == "finished"
    assert status["slurm"]["cluster"]["job_id"] == job_id
    assert status["slurm"]["cluster"]["nodes"] == ["node1", "node2"]
    assert not processes_matching(name)


def test_code_travels_in_the_job_script_without_a_shared_file_system(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("noshare")
    out = tmp_path / "out.txt"
    path = _topology(tmp_path, name, out=str(out), shared_fs=False)
    result = duck.run("up", str(path), "--wait", "--wait-for-allocation", "60")
    assert result.returncode == 0, result.stderr + result.stdout
    assert [line.split()[:2] for line in out.read_text().splitlines()] == [
        [str(i), str(i * i)] for i in range(100)
    ]
    # Shipping is a no-op for such a group: the node unpacked the job script's copy.
    assert (tmp_path / "work" / "code" / name / "sl_parts.py").read_bytes() == (
        HERE / "sl_parts.py"
    ).read_bytes()


def test_status_names_the_job_and_node_and_down_leaves_nothing(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("endless")
    path = _topology(tmp_path, name, spout="sl_parts:endless")
    result = duck.run("up", str(path), "--wait-for-allocation", "60")
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = _jobs_of(name, duck.env)
    assert [j[2] for j in jobs] == ["RUNNING"], jobs
    job_id = jobs[0][0]
    status = duck.status(name)
    host = "node1"
    assert status["slurm"]["cluster"] == {
        "job_id": job_id,
        "state": "RUNNING",
        "reason": "None",
        "nodes": [host],
        "partition": "debug",
    }
    wait_until(
        lambda: duck.status(name)["components"][1]["instances"][0]["received"] > 0,
        timeout=30,
        what="work to reach the Slurm group",
    )
    text = duck.run("status", name).stdout
    assert f"slurm cluster: job {job_id} running on {host}" in text
    assert processes_matching(name)  # its supervisor and workers run, under the job

    down = duck.down(name)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout  # (the summary: stdout)
    assert not _jobs_of(name, duck.env)
    wait_until(
        lambda: not processes_matching(name),
        timeout=15,
        what="every process of the topology to be gone",
    )


def test_down_force_cancels_the_job_at_once(duck: Clusterduck, tmp_path: Path) -> None:
    name = duck.name("force")
    path = _topology(tmp_path, name, spout="sl_parts:endless")
    assert duck.run("up", str(path)).returncode == 0
    assert _jobs_of(name, duck.env)
    down = duck.down(name, "--force")
    assert down.returncode == 0, down.stderr
    assert not _jobs_of(name, duck.env)
    wait_until(
        lambda: not processes_matching(name),
        timeout=15,
        what="every process of the topology to be gone",
    )


def test_more_nodes_than_exist_fail_up_with_exit_2_and_leave_no_job(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("toomany")
    path = _topology(tmp_path, name, slurm={"nodes": 5})
    result = duck.run("up", str(path), "--wait-for-allocation", "30")
    assert result.returncode == 2, result.stderr
    assert "Requested node configuration is not available" in result.stderr
    assert "hint: ask for fewer nodes" in result.stderr
    assert not _jobs_of(name, duck.env)
    assert not processes_matching(name)


def test_a_job_still_queued_after_wait_for_allocation_is_cancelled(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("queued")
    # Satisfiable, but not before an hour from now: it waits in the queue.
    path = _topology(tmp_path, name, slurm={"options": ["--begin=now+3600"]})
    result = duck.run("up", str(path), "--wait-for-allocation", "3")
    assert result.returncode == 2, result.stderr
    assert re.search(
        r"job \d+ still pending after 3s in the queue; it was cancelled", result.stderr
    ), result.stderr
    assert "reason BeginTime" in result.stderr
    assert not _jobs_of(name, duck.env)
    assert not processes_matching(name)
    assert json.loads(duck.run("status", name, "--json").stdout)["state"] == "failed"


def test_an_unknown_partition_gives_the_schedulers_message_and_a_hint(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("nopart")
    path = _topology(tmp_path, name, slurm={"partition": "gpu-nope"})
    result = duck.run("up", str(path))
    assert result.returncode == 2, result.stderr
    assert "invalid partition specified: gpu-nope" in result.stderr
    assert "hint: set hosts.cluster.slurm.partition to one of: debug" in result.stderr
    assert not _jobs_of(name, duck.env)


def test_no_sbatch_on_the_path_is_a_clear_error(duck: Clusterduck, tmp_path: Path) -> None:
    name = duck.name("nosbatch")
    path = _topology(tmp_path, name)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = duck.run("up", str(path), env={"PATH": str(empty)})
    assert result.returncode == 2, result.stderr
    assert "sbatch" in result.stderr and "not found on this machine's PATH" in result.stderr
    assert "login node" in result.stderr


def test_ctrl_c_while_queued_cancels_the_job(duck: Clusterduck, tmp_path: Path) -> None:
    name = duck.name("sigint")
    path = _topology(tmp_path, name, slurm={"options": ["--begin=now+3600"]})
    proc = subprocess.Popen(
        [*CLI, "up", str(path)],
        env=duck.env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def queued() -> None:
        wait_until(lambda: _jobs_of(name, duck.env), timeout=60, what="the job to be queued")

    _, err = interrupt(proc, queued)
    assert proc.returncode == 130, err
    assert not _jobs_of(name, duck.env)
    assert not processes_matching(name)


def test_a_job_ended_by_the_scheduler_shows_in_status_with_its_reason(
    duck: Clusterduck, tmp_path: Path
) -> None:
    name = duck.name("ended")
    path = _topology(tmp_path, name, spout="sl_parts:endless")
    assert duck.run("up", str(path)).returncode == 0
    [(job_id, _, _)] = _jobs_of(name, duck.env)
    # What an administrator or a preemption does: the job goes, from outside clusterduck.
    subprocess.run(["scancel", job_id], env={**os.environ, **duck.env}, check=True, timeout=30)
    status = wait_until(
        lambda: (s := duck.status(name))["hosts"]["cluster"] == "failed" and s,
        timeout=60,
        what="status to see the job gone",
    )
    assert status["state"] in ("failing", "failed")
    assert status["slurm"]["cluster"]["state"] == "CANCELLED"
    assert f"cluster: Slurm job {job_id} cancelled" in "\n".join(status["problems"])
    assert [r["state"] for r in status["components"][1]["instances"]] == ["failed", "failed"]
    assert duck.down(name).returncode == 0

"""The lifecycle of a running topology, through the real CLI (issue 4; docs/reference.md §3 and §6).

Every test drives ``python -m clusterduck`` in a subprocess with its own
``$CLUSTERDUCK_HOME``, observes through ``status --json`` and the OS (pids, ``/proc``), and
ends with ``down --force`` plus a check that none of its processes is left (see
``lifecycle_fixtures.Clusterduck.cleanup``). Topologies live in ``lifecycle_topologies/``;
each test runs them under a name of its own, so /proc scans only ever see its processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lifecycle_fixtures import (
    CLI,
    TOPOLOGIES,
    Clusterduck,
    instance,
    interrupt,
    pid_alive,
    processes_matching,
    rss_kb,
    wait_until,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

RSS_BOUND_KB = 200 * 1024  # generous: a clusterduck process idles at a few tens of MiB
PAYLOAD = 4096  # bytes per message of lifecycle_topologies/pressure.yaml


def rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for comp in status["components"] for row in comp["instances"]]


def pids_of(status: dict[str, Any]) -> list[int]:
    return [row["pid"] for row in rows(status)]


def all_gone(pids: list[int]) -> bool:
    return not any(pid_alive(p) for p in pids)


def received(duck: Clusterduck, name: str, component: str = "sink", index: int = 0) -> int:
    return int(instance(duck.status(name), component, index)["received"])


def assert_nothing_left(name: str, pids: list[int]) -> None:
    """Every pid gone and no process naming the topology (a SIGKILL lands a moment later
    than the command that sent it returns, hence the short poll)."""
    wait_until(lambda: all_gone(pids), timeout=10, what=f"pids {pids} to be gone")
    wait_until(
        lambda: not processes_matching(name), timeout=10, what=f"no process of {name} in /proc"
    )


# -- 1 ------------------------------------------------------------------------------------


def test_up_status_down_stops_every_process(duck: Clusterduck) -> None:
    name = duck.name("updown")
    started = duck.up("endless", name)
    assert started.returncode == 0, started.stderr

    status = duck.status(name)
    assert status["name"] == name
    assert status["state"] == "running"
    assert [c["name"] for c in status["components"]] == ["source", "relay", "sink"]
    assert len(rows(status)) == 4
    for row in rows(status):
        assert row["state"] == "running", row
        assert pid_alive(row["pid"]), row
    pids = pids_of(status)
    assert len(set(pids)) == len(pids)
    supervisor = duck.supervisor_pid(name)
    assert pid_alive(supervisor)
    assert supervisor not in pids

    stopped = duck.down(name)
    assert stopped.returncode == 0, stopped.stderr
    assert_nothing_left(name, [*pids, supervisor])


# -- 2 ------------------------------------------------------------------------------------


def test_graceful_down_drains_every_message(duck: Clusterduck) -> None:
    name = duck.name("drain")
    counted = duck.tmp / "sink-count.txt"
    started = duck.up("endless", name, env={"LC_OUT": str(counted), "LC_DELAY": "0"})
    assert started.returncode == 0, started.stderr
    wait_until(lambda: received(duck, name) >= 2000, what="the sink to receive 2000 messages")

    stopped = duck.down(name)
    assert stopped.returncode == 0, stopped.stderr

    final = duck.status(name)  # an ended topology keeps its final counters
    emitted = instance(final, "source")["emitted"]
    assert emitted >= 2000
    assert counted.exists(), "the sink's close() did not run on a graceful down"
    assert int(counted.read_text()) == emitted
    assert instance(final, "sink")["received"] == emitted
    relayed = sum(instance(final, "relay", i)["received"] for i in (0, 1))
    assert relayed == emitted
    for row in rows(final):
        assert row["state"] == "finished", row
        assert row["errors"] == 0, row


# -- 3 ------------------------------------------------------------------------------------


def test_killed_worker_is_restarted_and_delivery_goes_on(duck: Clusterduck) -> None:
    name = duck.name("restart")
    started = duck.up("endless", name)
    assert started.returncode == 0, started.stderr
    old = instance(duck.status(name), "relay", 0)["pid"]
    wait_until(lambda: received(duck, name, "relay", 0) > 0, what="relay/0 to receive")

    os.kill(old, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        row = instance(duck.status(name), "relay", 0)
        fresh = row["pid"] not in (None, old) and pid_alive(row["pid"])
        return row if fresh and row["restarts"] >= 1 and row["state"] == "running" else None

    row = wait_until(restarted, what="relay/0 to be restarted with a new pid")
    assert not pid_alive(old)
    new = row["pid"]

    # The new process delivers: its counters (and the sink's) keep growing under its pid.
    seen, sunk = row["received"], received(duck, name)

    def grows() -> bool:
        again = instance(duck.status(name), "relay", 0)
        return again["pid"] == new and again["received"] > seen

    wait_until(grows, what="the restarted relay/0 to receive messages")
    wait_until(lambda: received(duck, name) > sunk, what="the sink to keep receiving")
    assert instance(duck.status(name), "relay", 0)["restarts"] >= 1


# -- 4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_killed_supervisor_takes_its_processes_shows_broken_and_down_ends_it(
    duck: Clusterduck, start: str
) -> None:
    """Processes die with their supervisor (nothing would restart, report for or stop
    them, and status could not see them): forked ones and fresh interpreters alike.
    Before, they ran on as orphans until `down` swept them."""
    name = duck.name("orphans")
    started = duck.up("endless", name, env={"CLUSTERDUCK_START": start})
    assert started.returncode == 0, started.stderr
    pids = pids_of(duck.status(name))
    supervisor = duck.supervisor_pid(name)

    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisor), what="the supervisor to die")
    wait_until(lambda: all_gone(pids), timeout=10, what=f"its processes {pids} to die with it")

    status = duck.status(name)
    assert status["state"] == "broken", status
    assert any("its processes with it" in p for p in status["problems"]), status["problems"]

    # A short --timeout: nothing can drain without a supervisor, and `down` would wait
    # all of the default 30 s for it (see the report: deploy.Cluster.stop).
    stopped = duck.down(name, "--timeout", "2")
    assert stopped.returncode == 0, stopped.stderr
    # Not "spouts dispatched 0, sinks received 0" as if that were all: the counts died
    # with the processes, and the summary says whose are missing.
    assert "not counting source/0, relay/0" in stopped.stdout, stopped.stdout
    assert_nothing_left(name, pids)


# -- 5 ------------------------------------------------------------------------------------


def test_crash_at_start_exits_2_and_leaves_nothing(duck: Clusterduck) -> None:
    name = duck.name("badstart")
    checked = duck.run(
        "validate",
        str(Path(__file__).parent / "lifecycle_topologies" / "broken_start.yaml"),
        env={"LC_NAME": name},
    )
    assert checked.returncode == 0, checked.stderr  # the file is valid; only the start fails

    started = duck.up("broken_start", name)
    assert started.returncode == 2, (started.stdout, started.stderr)
    assert re.search(r"\bpicky\b", started.stderr), started.stderr
    assert "BrokenAtInit" in started.stderr
    supervisor = duck.supervisor_pid(name)
    assert_nothing_left(name, [supervisor])
    # How it ended is kept, with the error, not asked of the supervisor that is gone.
    assert duck.record(name)["final"] is not None
    status = duck.status(name)
    assert status["state"] == "failed", status
    assert any("BrokenAtInit" in problem for problem in status["problems"]), status
    # The supervisor `up` killed is not asked: no "does not answer" / "is gone" beside it.
    assert not [p for p in status["problems"] if "supervisor" in p], status["problems"]
    for row in rows(status):
        assert row["state"] in ("failed", "crashed"), row
    assert instance(status, "picky")["state"] == "failed"


def test_ctrl_c_during_start_is_recorded_as_stopped(duck: Clusterduck) -> None:
    """Ctrl-C while `up` still starts the topology stops it: ``stopped``, not ``failed``."""
    name = duck.name("interrupted")
    up = subprocess.Popen(
        [*CLI, "up", str(TOPOLOGIES / "slow_start.yaml")],
        env={**duck.env, "LC_NAME": name},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=duck.tmp,
    )

    def starting() -> bool:
        try:
            record = duck.record(name)
        except (OSError, ValueError):
            return False
        return record["status"] == "starting" and pid_alive(
            record["hosts"].get("localhost", {}).get("pid")
        )

    _, err = interrupt(up, lambda: wait_until(starting, what="the supervisor to be started"))
    assert up.returncode == 130, err
    assert duck.record(name)["status"] == "stopped"
    status = duck.status(name)
    assert status["state"] == "stopped", status
    assert all(row["state"] != "unreachable" for row in rows(status)), status
    wait_until(
        lambda: not processes_matching(name), timeout=10, what=f"no process of {name} in /proc"
    )


# -- 6 ------------------------------------------------------------------------------------


def test_slow_sink_keeps_memory_bounded_with_back_pressure(duck: Clusterduck) -> None:
    name = duck.name("pressure")
    started = duck.up("pressure", name)
    assert started.returncode == 0, started.stderr
    pids = [*pids_of(duck.status(name)), duck.supervisor_pid(name)]
    peak = dict.fromkeys(pids, 0)
    # Run until more bytes went through than the RSS bound could ever hold.
    target = 3 * RSS_BOUND_KB * 1024 // (2 * PAYLOAD)
    pressure_seen = []
    samples = []

    def sample() -> dict[str, Any] | None:
        for pid in pids:
            rss = rss_kb(pid)
            assert rss is not None, f"process {pid} of {name} is gone"
            peak[pid] = max(peak[pid], rss)
        status = duck.status(name)
        samples.append(status)
        spout = instance(status, "flood")
        if spout["backlog"] > 0 or spout.get("blocked_seconds", 0) > 0:
            pressure_seen.append(spout)
        return status if instance(status, "slow")["received"] >= target else None

    final = wait_until(
        sample, timeout=90, interval=0.2, what=f"the slow sink to receive {target} messages"
    )
    assert len(samples) >= 3
    spout = instance(final, "flood")
    assert spout["emitted"] * PAYLOAD > RSS_BOUND_KB * 1024
    assert max(peak.values()) < RSS_BOUND_KB, {pid: f"{kb // 1024} MiB" for pid, kb in peak.items()}
    assert pressure_seen, [instance(s, "flood") for s in samples]
    if os.environ.get("LC_VERBOSE"):
        print(
            {pid: f"{kb // 1024} MiB" for pid, kb in peak.items()},
            len(samples),
            spout["emitted"],
            instance(final, "slow")["received"],
            pressure_seen[-1],
        )


# -- 7 ------------------------------------------------------------------------------------


def test_two_topologies_run_side_by_side(duck: Clusterduck) -> None:
    first, second = duck.name("twin-a"), duck.name("twin-b")
    for name in (first, second):
        started = duck.up("endless", name)
        assert started.returncode == 0, (name, started.stderr)
    for name in (first, second):
        wait_until(lambda n=name: received(duck, n) > 0, what=f"{name} to deliver")
    first_pids = pids_of(duck.status(first))
    second_pids = pids_of(duck.status(second))
    assert not set(first_pids) & set(second_pids)

    stopped = duck.down(first)
    assert stopped.returncode == 0, stopped.stderr
    assert_nothing_left(first, first_pids)

    assert all(pid_alive(p) for p in second_pids)
    status = duck.status(second)
    assert status["state"] == "running"
    assert all(row["state"] == "running" for row in rows(status))
    sunk = instance(status, "sink")["received"]
    wait_until(lambda: received(duck, second) > sunk, what=f"{second} to keep delivering")

    stopped = duck.down(second)
    assert stopped.returncode == 0, stopped.stderr
    assert_nothing_left(second, second_pids)


# -- 8 ------------------------------------------------------------------------------------


def test_cli_user_errors_logs_and_list(duck: Clusterduck) -> None:
    first, second = duck.name("cli-a"), duck.name("cli-b")
    for name in (first, second):
        started = duck.up("endless", name)
        assert started.returncode == 0, (name, started.stderr)
    pids = pids_of(duck.status(first))

    again = duck.up("endless", first)
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert "already running" in again.stderr
    assert first in again.stderr
    assert pids_of(duck.status(first)) == pids and all(pid_alive(p) for p in pids)

    for command in ("status", "down"):
        ambiguous = duck.run(command)
        assert ambiguous.returncode == 1, (command, ambiguous.stdout, ambiguous.stderr)
        assert first in ambiguous.stderr and second in ambiguous.stderr, ambiguous.stderr
    assert all(pid_alive(p) for p in pids)  # the refused `down` stopped nothing

    def relay_logs() -> str | None:
        shown = duck.run("logs", first, "relay", "-n", "5")
        assert shown.returncode == 0, shown.stderr
        return shown.stdout if "relay saw" in shown.stdout else None

    out = wait_until(relay_logs, what="relay's printed lines in `logs`")
    blocks = re.split(r"^==> (\S+) .*<==$", out, flags=re.MULTILINE)[1:]
    labels = blocks[::2]
    assert sorted(labels) == ["relay/0", "relay/1"], out
    for body in blocks[1::2]:
        assert len(body.strip("\n").splitlines()) <= 5, out

    listed = duck.run("list")
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout and second in listed.stdout, listed.stdout


# -- 9 ------------------------------------------------------------------------------------


def test_up_wait_prints_sink_output_of_a_finite_topology(duck: Clusterduck) -> None:
    name = duck.name("finite")
    done = duck.up("finite", name, "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "printer done: count=20 total=380" in done.stdout, done.stdout
    final = duck.status(name)
    assert final["state"] == "finished"
    assert instance(final, "printer")["received"] == 20
    wait_until(
        lambda: not processes_matching(name), timeout=10, what=f"no process of {name} in /proc"
    )


def test_up_wait_exits_2_when_on_error_stop_fires(duck: Clusterduck) -> None:
    name = duck.name("stop")
    done = duck.up("stop_on_error", name, "--wait")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "fragile" in done.stdout + done.stderr
    assert duck.status(name)["state"] == "failed"
    wait_until(
        lambda: not processes_matching(name), timeout=10, what=f"no process of {name} in /proc"
    )


def test_every_up_is_a_run_of_its_own(duck: Clusterduck) -> None:
    """A second `up` of the same name writes new logs: `logs` shows only the latest run,
    `--run 1` and `--all-runs` reach the earlier one."""
    name = duck.name("runs")
    for _ in range(2):
        done = duck.up("finite", name, "--wait")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert done.stdout.count("printer done: count=20 total=380") == 1, done.stdout
    latest = duck.run("logs", name, "printer", "-n", "100")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.count("printer done") == 1, latest.stdout
    assert f"/runs/{name}/2/logs/printer.0.log" in latest.stdout
    first = duck.run("logs", name, "printer", "-n", "100", "--run", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("printer done") == 1
    assert f"/runs/{name}/1/logs/printer.0.log" in first.stdout
    every = duck.run("logs", name, "printer", "-n", "100", "--all-runs")
    assert every.returncode == 0, every.stderr
    assert every.stdout.count("printer done") == 2
    assert "### run 1" in every.stdout and "### run 2 (latest)" in every.stdout
    missing = duck.run("logs", name, "--run", "7")
    assert missing.returncode == 1 and "no run 7" in missing.stderr

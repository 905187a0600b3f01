"""Warm start (runtime/forkserver.py): processes forked from a prepared fork server, and
the fresh-interpreter fallback, through the real CLI and what /proc says.

Each test runs in both modes where both must behave the same: ``fork`` (the default)
and ``spawn`` (``CLUSTERDUCK_START=spawn``, also what runs without fork).
"""

from __future__ import annotations

import os
import re
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from lifecycle_fixtures import Clusterduck, instance, pid_alive, processes_matching, wait_until

from clusterduck.prestart import guess_name
from clusterduck.runtime.forkserver import FORK, SPAWN, choose_mode
from tests.procs import cmdline, stat_fields

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

MODES = {FORK: {}, SPAWN: {"CLUSTERDUCK_START": "spawn"}}


def rows(status: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(instance name, row) of every instance."""
    return [
        (f"{comp['name']}/{row['index']}", row)
        for comp in status["components"]
        for row in comp["instances"]
    ]


def parent(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None, f"pid {pid} is gone"
    return int(fields[1])


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def supervisor_log(duck: Clusterduck, name: str) -> str:
    run_dir = duck.record(name)["hosts"]["localhost"]["run_dir"]
    return (Path(run_dir) / "supervisor.log").read_text()


def assert_started_by(mode: str, pid: int, supervisor: int, instance_name: str) -> None:
    """A forked process is the supervisor's child (re-parented: it is the subreaper),
    named ``cd <instance>``, with the supervisor's command line; a spawned one runs
    ``python -m clusterduck.runtime.process``."""
    assert parent(pid) == supervisor, (pid, parent(pid), supervisor)
    if mode == FORK:
        assert comm(pid) == f"cd {instance_name}"[:15]
        assert "clusterduck.runtime.supervisor" in cmdline(pid)
    else:
        assert "clusterduck.runtime.process" in cmdline(pid)


@pytest.mark.parametrize("mode", [FORK, SPAWN])
def test_processes_start_and_restart_in_each_mode_and_down_leaves_nothing(
    duck: Clusterduck, mode: str
) -> None:
    duck.env.update(MODES[mode])
    name = duck.name(f"warm-{mode}")
    started = duck.up("endless", name)
    assert started.returncode == 0, started.stderr
    supervisor = duck.supervisor_pid(name)
    status = duck.status(name)
    for instance_name, row in rows(status):
        assert row["state"] == "running", row
        assert_started_by(mode, row["pid"], supervisor, instance_name)
    said = "processes start by fork" if mode == FORK else "processes start as fresh interpreters"
    assert said in supervisor_log(duck, name)

    # kill -9: restarted the same way, on a new pid, and it delivers.
    old = instance(status, "relay", 0)["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        row = instance(duck.status(name), "relay", 0)
        fresh = row["pid"] not in (None, old) and pid_alive(row["pid"])
        return row if fresh and row["restarts"] >= 1 and row["state"] == "running" else None

    row = wait_until(restarted, what="relay/0 to be restarted with a new pid")
    assert_started_by(mode, row["pid"], supervisor, "relay/0")
    seen = row["received"]
    wait_until(
        lambda: instance(duck.status(name), "relay", 0)["received"] > seen,
        what="the restarted relay/0 to receive",
    )

    # Per-process logs: what relay prints is in its own log, not the supervisor's.
    logs = Path(duck.record(name)["hosts"]["localhost"]["run_dir"]) / "logs"
    wait_until(lambda: "relay saw" in (logs / "relay.0.log").read_text(), what="relay output")
    assert "relay saw" not in supervisor_log(duck, name)

    pids = [r["pid"] for _, r in rows(duck.status(name))]
    stopped = duck.down(name)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not any(pid_alive(p) for p in [*pids, supervisor]), what="pids gone")
    # The fork server carries the topology's marker too: nothing of it is left.
    wait_until(lambda: not processes_matching(name), timeout=10, what=f"no process of {name}")


BREAKS_ON_THE_HOST = """\
import os

if os.environ.get("CD_TEST_BREAK_IMPORT"):
    import clusterduck_no_such_module  # noqa: F401


def numbers(dispatch):
    for i in range(10):
        dispatch(i, i)


def same(value):
    return value
"""

TOPOLOGY = """\
name: {name}
code: code
hosts:
  localhost:
    env: {{CD_TEST_BREAK_IMPORT: "1"}}
spouts:
  - name: numbers
    entry: breaks:numbers
workers:
  - name: fragile
    entry: breaks:same
    inputs: [numbers]
"""


@pytest.mark.parametrize("mode", [FORK, SPAWN])
def test_an_import_error_on_the_host_names_the_component(
    duck: Clusterduck, tmp_path: Path, mode: str
) -> None:
    """The module imports where `up` validates, and fails where the process runs."""
    duck.env.update(MODES[mode])
    name = duck.name(f"breaks-{mode}")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "breaks.py").write_text(BREAKS_ON_THE_HOST)
    path = tmp_path / "breaks.yaml"
    path.write_text(TOPOLOGY.format(name=name))

    started = duck.run("up", str(path))
    assert started.returncode == 2, (started.stdout, started.stderr)
    # The component, and the error itself on the first line (not only in the log tail).
    first = started.stderr.splitlines()[0]
    assert re.search(r"(fragile|numbers)/0: EntryError: importing 'breaks' failed", first), first
    assert "clusterduck_no_such_module" in first
    wait_until(lambda: not processes_matching(name), timeout=10, what=f"no process of {name}")


def test_a_dead_fork_server_falls_back_to_fresh_interpreters(duck: Clusterduck) -> None:
    name = duck.name("noserver")
    started = duck.up("endless", name)
    assert started.returncode == 0, started.stderr
    supervisor = duck.supervisor_pid(name)
    servers = [p for p in processes_matching(name) if comm(p) == "cd-forkserver"]
    assert len(servers) == 1, servers
    os.kill(servers[0], signal.SIGKILL)

    old = instance(duck.status(name), "relay", 1)["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        row = instance(duck.status(name), "relay", 1)
        fresh = row["pid"] not in (None, old) and pid_alive(row["pid"])
        return row if fresh and row["state"] == "running" else None

    row = wait_until(restarted, what="relay/1 to be restarted without the fork server")
    assert_started_by(SPAWN, row["pid"], supervisor, "relay/1")
    assert "the fork server is gone" in supervisor_log(duck, name)
    # The processes forked earlier run on: the fork server is not their parent.
    assert instance(duck.status(name), "relay", 0)["state"] == "running"


def test_no_process_of_a_curve_topology_loads_asyncio(duck: Clusterduck) -> None:
    """The ZAP handler every CURVE server socket needs is our own thread (runtime/zap.py),
    not pyzmq's asyncio-based authenticator: neither the supervisor, nor the fork server,
    nor a forked process maps asyncio's C module (about 30 ms of CPU each start)."""
    name = duck.name("curvefork")
    started = duck.up("endless", name, env={"LC_SECURITY": "curve"})
    assert started.returncode == 0, started.stderr
    pids = processes_matching(name)
    assert any(comm(p) == "cd-forkserver" for p in pids), [comm(p) for p in pids]
    assert len(pids) >= 3, [comm(p) for p in pids]  # supervisor, fork server, processes
    for pid in pids:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "_asyncio" not in maps, (pid, comm(pid))


@pytest.mark.parametrize(
    ("host_env", "outside", "mode"),
    [
        ({}, {}, FORK),
        ({"CLUSTERDUCK_START": "spawn"}, {}, SPAWN),
        ({}, {"CLUSTERDUCK_START": "spawn"}, SPAWN),
        ({"CLUSTERDUCK_START": "fork"}, {"CLUSTERDUCK_START": "spawn"}, FORK),
        ({"CLUSTERDUCK_START": "warm"}, {}, SPAWN),
        ({"PYTHONPATH": "/opt/lib", "DB": "x"}, {}, FORK),
        ({"PYTHONHASHSEED": "0"}, {}, SPAWN),
        ({"LD_PRELOAD": "libfoo.so"}, {}, SPAWN),
    ],
)
def test_choose_mode(
    host_env: dict[str, str],
    outside: dict[str, str],
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLUSTERDUCK_START", raising=False)
    for key, value in outside.items():
        monkeypatch.setenv(key, value)
    chosen, why = choose_mode(host_env)
    assert chosen == mode, why
    assert why


SHOWS_THE_PROCESS = """\
import os
import sys


def numbers(dispatch):
    for i in range(3):
        dispatch(i, i)


def show(value):
    print("cwd", os.getcwd(), flush=True)
    print("path0", sys.path[0], flush=True)
    print("extra", os.environ.get("CD_TEST_EXTRA"), flush=True)
    print("argv", " ".join(sys.argv[1:]), flush=True)
    print("stdin", repr(sys.stdin.read()), flush=True)
    return value
"""


@pytest.mark.parametrize("mode", [FORK, SPAWN])
def test_a_process_sees_the_same_surroundings_in_both_modes(
    duck: Clusterduck, tmp_path: Path, mode: str
) -> None:
    duck.env.update(MODES[mode])
    name = duck.name(f"sees-{mode}")
    code = tmp_path / "code"
    code.mkdir()
    (code / "shows.py").write_text(SHOWS_THE_PROCESS)
    path = tmp_path / "shows.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            name: {name}
            code: code
            hosts:
              localhost:
                env: {{CD_TEST_EXTRA: "here"}}
            spouts:
              - name: numbers
                entry: shows:numbers
            workers:
              - name: show
                entry: shows:show
                inputs: [numbers]
            """)
    )
    started = duck.run("up", str(path), "--wait")
    assert started.returncode == 0, started.stderr
    run_dir = Path(duck.record(name)["hosts"]["localhost"]["run_dir"])
    text = (run_dir / "logs" / "show.0.log").read_text()
    assert f"cwd {code.resolve()}" in text
    assert f"path0 {code.resolve()}" in text
    assert "extra here" in text
    assert f"argv --topology {name} show/0" in text
    assert "stdin ''" in text


# -- the supervisor interpreter started while `up` validates (clusterduck/prestart.py) --


@pytest.mark.parametrize(
    ("text", "environ", "name"),
    [
        ("name: wordcount\nspouts: []\n", {}, "wordcount"),
        ("# a comment\nname: 'quoted-1.2_x'  # trailing\n", {}, "quoted-1.2_x"),
        ('name: "${N}"\n', {"N": "from-env"}, "from-env"),
        ("name: ${N:-fallback}\n", {}, "fallback"),
        ("name: ${N:-fallback}\n", {"N": ""}, "fallback"),
        ("name: pre-${N}\n", {}, None),  # unset without default: the loader refuses it
        ("name: two words\n", {}, None),
        ("spouts:\n  - name: src\n", {}, None),  # only a nested name
        ("name: t\nhosts:\n  h1: {}\n", {}, None),  # may run elsewhere entirely
        ("name: t\nworkers:\n  - name: w\n    host: h1\n", {}, None),
    ],
)
def test_guess_name(text: str, environ: dict[str, str], name: str | None) -> None:
    assert guess_name(text, environ) == name


def test_an_invalid_file_leaves_no_early_supervisor(duck: Clusterduck, tmp_path: Path) -> None:
    name = duck.name("invalid")
    path = tmp_path / "invalid.yaml"
    path.write_text(
        f"name: {name}\nspouts:\n  - name: s\n    entry: nowhere:s\n"
        "workers:\n  - name: w\n    entry: nowhere:w\n    inputs: [nosuch]\n"
    )
    result = duck.run("up", str(path))
    assert result.returncode == 1, result.stderr
    assert "nosuch" in result.stderr
    assert not processes_matching(name)  # killed before `up` returned
    assert not (duck.home / "topologies" / name).exists()


def test_a_second_up_of_a_running_topology_leaves_the_first_alone(duck: Clusterduck) -> None:
    name = duck.name("twice")
    assert duck.up("endless", name).returncode == 0
    before = set(processes_matching(name))
    again = duck.up("endless", name)
    assert again.returncode == 1 and "already running" in again.stderr, again.stderr
    assert set(processes_matching(name)) == before
    assert duck.down(name).returncode == 0

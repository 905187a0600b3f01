"""What a new user trips on at the command line: exit codes, messages, the commands'
arguments. Every test drives the real CLI in a subprocess (``lifecycle_fixtures``)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_fixtures import (
    TOPOLOGIES,
    Clusterduck,
    instance,
    processes_matching,
    wait_until,
)


def numbers_through(tmp_path: Path, name: str, worker: str, module: str = "") -> Path:
    """A topology file: 20 numbers -> ``worker`` (a YAML flow mapping, fed by numbers) ->
    a printer; ``module`` is the source of a ``user.py`` next to lifecycle's parts."""
    if module:
        (tmp_path / "user.py").write_text(module)
        (tmp_path / "lc_parts.py").write_text((TOPOLOGIES / "lc_parts.py").read_text())
    worker_name = worker.split(",")[0].split(":")[1].strip()
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"code: {'.' if module else TOPOLOGIES}\n"
        "spouts:\n"
        "  - {name: numbers, entry: 'lc_parts:count_up', args: {count: 20}}\n"
        "workers:\n"
        f"  - {worker}\n"
        f"  - {{name: printer, entry: 'lc_parts:Printer', inputs: [{worker_name}]}}\n"
    )
    return path


@pytest.fixture
def hangup_port() -> Iterator[int]:
    """A TCP port on loopback that accepts and hangs up at once: what a host whose
    port 22 is not sshd (or a proxy that drops the connection) looks like to SSH."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_a_failed_ssh_handshake_prints_one_error_and_no_traceback(
    duck: Clusterduck, tmp_path: Path, hangup_port: int
) -> None:
    name = duck.name("hangup")
    path = tmp_path / "hangup.yaml"
    path.write_text(
        f"name: {name}\n"
        f"code: {TOPOLOGIES}\n"
        "hosts:\n"
        f"  edge1: {{address: 127.0.0.1, port: {hangup_port}}}\n"
        "spouts:\n"
        "  - {name: numbers, entry: 'lc_parts:count_up'}\n"
        "workers:\n"
        "  - {name: double, entry: 'lc_parts:double', inputs: [numbers], host: edge1}\n"
    )
    result = duck.run("up", str(path), "--accept-new-host-keys")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "host 'edge1'" in result.stderr and str(hangup_port) in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception (client)" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("nosuchcommand",),
        ("status", "--bogus"),
        ("up",),
        ("up", "."),  # a folder, not a file
        ("logs", "-n", "many"),
    ],
)
def test_usage_errors_exit_1_like_every_user_error(
    duck: Clusterduck, args: tuple[str, ...]
) -> None:
    """Exit 2 means a host or process failed; click's own default for usage is 2."""
    result = duck.run(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Usage: clusterduck" in result.stderr and "Error:" in result.stderr


def test_down_of_a_stopped_topology_says_so_and_keeps_its_end(duck: Clusterduck) -> None:
    name = duck.name("twice")
    assert duck.up("endless", name).returncode == 0
    first = duck.down(name)
    assert first.returncode == 0, first.stderr
    stopped = duck.status(name)
    assert stopped["state"] == "stopped"

    again = duck.down(name)
    assert again.returncode == 0, again.stderr
    assert f"{name} is not running" in again.stderr, again.stderr
    assert duck.status(name) == stopped  # not turned into `failed`, counters kept


def test_a_finished_topology_does_not_make_status_ambiguous(
    duck: Clusterduck, tmp_path: Path
) -> None:
    """A topology that finished while nobody looked is still marked running in its
    record; `status`, `down` and `logs` without NAME mean the one really running."""
    running, done = duck.name("still"), duck.name("done")
    assert duck.up("endless", running).returncode == 0
    path = tmp_path / "short.yaml"  # lasts a moment longer than `up` takes to return
    path.write_text(
        f"name: {done}\n"
        f"code: {TOPOLOGIES}\n"
        "spouts:\n"
        "  - {name: numbers, entry: 'lc_parts:count_up', args: {count: 1000}}\n"
        "workers:\n"
        "  - {name: nap, entry: 'lc_parts:sleepy', args: {ms: 1}, inputs: [numbers]}\n"
    )
    started = duck.run("up", str(path))  # --detach: nobody sees it finish
    assert started.returncode == 0, started.stderr
    wait_until(lambda: not processes_matching(done), what=f"{done} to finish by itself")
    assert duck.record(done)["status"] == "running"  # what the record still says

    shown = duck.run("status")
    assert shown.returncode == 0, shown.stderr
    assert f"topology {running}" in shown.stdout, shown.stdout
    assert duck.record(done)["status"] == "finished"


def test_logs_of_a_component_without_naming_the_topology(duck: Clusterduck) -> None:
    name = duck.name("logsc")
    assert duck.up("finite", name, "--wait").returncode == 0

    shown = duck.run("logs", "printer", "-n", "5")
    assert shown.returncode == 0, shown.stderr
    assert "==> printer/0 " in shown.stdout and "printer done" in shown.stdout, shown.stdout
    assert "==> double/0 " not in shown.stdout

    typo = duck.run("logs", "printr")
    assert typo.returncode == 1
    assert "no topology named 'printr'" in typo.stderr and "printer" in typo.stderr


@pytest.mark.parametrize("args", [("logs", "-n", "-1"), ("down", "--timeout", "-1")])
def test_negative_counts_and_timeouts_are_refused(duck: Clusterduck, args: tuple[str, ...]) -> None:
    result = duck.run(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Invalid value" in result.stderr


def test_up_wait_names_the_component_whose_errors_were_counted(
    duck: Clusterduck, tmp_path: Path
) -> None:
    """Exit 0 (counted errors are not a failure), but the user is told where to look."""
    name = duck.name("errs")
    path = numbers_through(
        tmp_path,
        name,
        "{name: picky, entry: 'lc_parts:fail_at', args: {bad: 7}, inputs: [numbers]}",
    )
    done = duck.run("up", str(path), "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "printer done: count=19" in done.stdout, done.stdout
    assert f"picky: 1 error; see `clusterduck logs {name} picky`" in done.stderr, done.stderr
    assert "printer:" not in done.stderr and "numbers:" not in done.stderr, done.stderr
    shown = duck.run("logs", name, "picky")
    assert "fail_at: refusing 7" in shown.stdout, shown.stdout


@pytest.mark.parametrize("code", [1, 3])
def test_up_wait_says_a_worker_crashed_and_what_that_cost(
    duck: Clusterduck, tmp_path: Path, code: int
) -> None:
    """A worker that dies mid-stream is restarted and the run finishes (exit 0); under
    at-most-once what it held is gone, and the user is told so instead of a bare 0.
    Exit code 3 is also the runtime's own "failed to load": user code exiting with it
    is still a crash, restarted like any other."""
    name = duck.name("crashy")
    path = numbers_through(
        tmp_path,
        name,
        "{name: fragile, entry: 'user:die_at_7', inputs: [numbers]}",
        "import os\n\n\ndef die_at_7(value):\n    if value == 7:\n"
        f"        os._exit({code})\n"
        "    return value\n",
    )
    done = duck.run("up", str(path), "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr)
    line = next((x for x in done.stderr.splitlines() if x.startswith("fragile: ")), "")
    assert f"1 restart (exited with exit code {code})" in line, done.stderr
    assert "guarantee: at-most-once" in line and f"clusterduck logs {name} fragile" in line
    # Every one of the 20 ids reached the printer or is counted lost: the crash cost
    # what fragile/0 held and what the spout had in flight towards it.
    printed = re.search(r"printer done: count=(\d+)", done.stdout)
    assert printed, done.stdout
    lost = re.search(r"([\d,]+) messages? lost", line)
    assert lost, done.stderr
    assert int(printed[1]) + int(lost[1].replace(",", "")) >= 20, (done.stdout, line)


def test_status_through_a_pipe_keeps_one_line_per_instance(
    duck: Clusterduck, tmp_path: Path
) -> None:
    """`status | grep` and `status > file` get whole rows, a long last error included."""
    name = duck.name("piped")
    path = numbers_through(
        tmp_path,
        name,
        "{name: wordy, entry: 'user:refuse', inputs: [numbers], parallelism: 2}",
        "def refuse(value):\n"
        "    if value == 3:\n"
        "        raise ValueError('this message is long enough to need wrapping in a table: '\n"
        "                         + 'x' * 40)\n"
        "    return value\n",
    )
    assert duck.run("up", str(path), "--wait").returncode == 0
    shown = duck.run("status", name)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 + 4, shown.stdout  # title, header, one row per instance
    assert sum("ValueError: this message is long" in line for line in lines) == 1, lines


def test_logs_of_every_process_lists_the_silent_ones_on_one_line(duck: Clusterduck) -> None:
    name = duck.name("quiet")
    assert duck.up("finite", name, "--wait").returncode == 0

    shown = duck.run("logs", name, "-n", "3")
    assert shown.returncode == 0, shown.stderr
    assert "==> printer/0 " in shown.stdout and "printer done" in shown.stdout
    assert "==> double/0 " not in shown.stdout and "(empty)" not in shown.stdout, shown.stdout
    assert shown.stdout.splitlines()[-1] == "(nothing logged by numbers/0, double/0)"

    asked = duck.run("logs", name, "double")  # asked for by name: said, where it is
    assert "==> double/0 " in asked.stdout and "(empty)" in asked.stdout, asked.stdout


def test_status_without_name_says_whether_the_candidates_run(duck: Clusterduck) -> None:
    first, second = duck.name("known-a"), duck.name("known-b")
    for name in (first, second):
        assert duck.up("finite", name, "--wait").returncode == 0
    ended = duck.run("status")
    assert ended.returncode == 1
    assert "no topology is running, and several are known" in ended.stderr, ended.stderr
    assert first in ended.stderr and second in ended.stderr and "clusterduck list" in ended.stderr

    # `down` without NAME cannot pick one either: exit 1 listing the candidates (SPEC),
    # and the recorded ends are kept.
    nothing = duck.run("down")
    assert nothing.returncode == 1, (nothing.stdout, nothing.stderr)
    assert "no topology is running, and several are known" in nothing.stderr, nothing.stderr
    assert first in nothing.stderr and second in nothing.stderr
    assert duck.status(first)["state"] == "finished"  # its recorded end is kept

    # `logs COMPONENT` cannot pick a topology, but says which ones have that component.
    which = duck.run("logs", "printer")
    assert which.returncode == 1, (which.stdout, which.stderr)
    assert f"`clusterduck logs {first} printer`" in which.stderr, which.stderr
    assert f"`clusterduck logs {second} printer`" in which.stderr, which.stderr


def test_down_that_had_to_kill_says_which_instances(duck: Clusterduck, tmp_path: Path) -> None:
    """A worker that never returns cannot drain: `down` kills it after --timeout and says
    so (and `status` keeps it), instead of a stopped topology whose rows read `running`."""
    name = duck.name("stuck")
    path = numbers_through(
        tmp_path,
        name,
        "{name: stuck, entry: 'user:hang_at_3', inputs: [numbers]}",
        "import time\n\n\ndef hang_at_3(value):\n    if value == 3:\n"
        "        print('hanging at 3', flush=True)\n"
        "        time.sleep(3600)\n"
        "    return value\n",
    )
    assert duck.run("up", str(path)).returncode == 0

    def hanging() -> bool:
        return "hanging at 3" in duck.run("logs", name, "stuck").stdout

    wait_until(hanging, what="the worker to hang")

    def silent() -> bool:  # it reports between calls of its code: it has gone quiet
        stuck = instance(duck.status(name), "stuck")
        return bool(stuck["silent_seconds"] > 0)

    wait_until(silent, what="status to show stuck/0 silent")
    shown = duck.run("status", name)
    assert "stuck/0 has not reported for " in shown.stdout, shown.stdout
    assert "numbers/0 has not" not in shown.stdout  # the spout keeps reporting
    stopped = duck.down(name, "--timeout", "0.2")
    assert stopped.returncode == 0, stopped.stderr
    killed = next((x for x in stopped.stderr.splitlines() if x.startswith("killed ")), "")
    assert killed.startswith("killed after the 0.2 s drain timeout: "), stopped.stderr
    assert "stuck/0 (" in killed and f"clusterduck down {name} --timeout S" in killed
    status = duck.status(name)
    assert status["state"] == "stopped"
    assert any(p.startswith("killed after the 0.2 s") for p in status["problems"]), status
    assert not processes_matching(name)


def test_up_wait_says_a_restarted_spout_ran_again_from_its_start(
    duck: Clusterduck, tmp_path: Path
) -> None:
    """Under at-most-once a restarted spout has no resume point: it dispatches its ids
    again, and the user is told why the sink saw more messages than the spout has."""
    name = duck.name("respout")
    (tmp_path / "lc_parts.py").write_text((TOPOLOGIES / "lc_parts.py").read_text())
    (tmp_path / "user.py").write_text(
        "import os\n\n\n"
        "def once_dies(dispatch, marker):\n"
        "    for i in range(20):\n"
        "        if i == 10 and not os.path.exists(marker):\n"
        "            open(marker, 'w').close()\n"
        "            os._exit(1)\n"
        "        dispatch(i, i)\n"
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ncode: .\nspouts:\n"
        f"  - {{name: numbers, entry: 'user:once_dies', args: {{marker: '{tmp_path}/died'}}}}\n"
        "workers:\n  - {name: printer, entry: 'lc_parts:Printer', inputs: [numbers]}\n"
    )
    done = duck.run("up", str(path), "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr)
    line = next((x for x in done.stderr.splitlines() if x.startswith("numbers: ")), "")
    assert "1 restart" in line and "called again from its start" in line, done.stderr
    assert "printer: " not in done.stderr, done.stderr

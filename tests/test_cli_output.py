"""What the CLI prints for a running topology: piped tables without trailing blanks,
``up`` of a running name refused before any progress, ``down --force`` naming a few of
the instances it killed. Real processes through the CLI (``lifecycle_fixtures``)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
from lifecycle_fixtures import CLI, TOPOLOGIES, Clusterduck, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def on_a_terminal(duck: Clusterduck, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout and stderr (rich then draws live
    progress); its exit code and everything it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args],
        env={**duck.env, "TERM": "xterm", "COLUMNS": "160", **env},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=duck.tmp,
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while True:
            if not select.select([leader], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise AssertionError(f"no end of output in 60 s: {b''.join(chunks)!r}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=60)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode(errors="replace")


def test_running_topology_output(duck: Clusterduck) -> None:
    name = duck.name("wide")
    started = duck.up("wide", name)
    assert started.returncode == 0, started.stderr
    wait_until(
        lambda: all(
            r["state"] == "running" for c in duck.status(name)["components"] for r in c["instances"]
        ),
        what="every instance running",
    )

    # Piped tables: one line per row, none ending in blanks (rich pads the last column).
    for args in (("status", name), ("list",)):
        shown = duck.run(*args)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert len(lines) >= 2 and any(name in line for line in lines), shown.stdout
        assert [line for line in lines if line != line.rstrip()] == [], args

    # `up` of the running name: the error, and no progress drawn before it.
    code, text = on_a_terminal(duck, "up", str(TOPOLOGIES / "wide.yaml"), env={"LC_NAME": name})
    assert code == 1, text
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).strip()
    assert plain.startswith(f"error: topology '{name}' is already running"), plain
    assert "connect" not in plain and "spawn" not in plain and "waiting" not in plain, plain

    # `down --force` of twelve instances: the problem line names a few, counts the rest.
    stopped = duck.down(name, "--force")
    assert stopped.returncode == 0, stopped.stderr
    problems = duck.status(name)["problems"]
    killed = [p for p in problems if p.startswith("killed with --force: ")]
    assert len(killed) == 1, problems
    assert killed[0].endswith(" and 4 more"), killed[0]
    assert killed[0].count("/") == 8, killed[0]


def test_a_remote_address_that_does_not_resolve_is_blamed_on_its_host(duck: Clusterduck) -> None:
    name = duck.name("noresolve")
    topology = duck.tmp / "noresolve.yaml"
    topology.write_text(
        f"name: {name}\n"
        f"code: {TOPOLOGIES}\n"
        "hosts:\n"
        "  far: {address: no-such-host.invalid}\n"
        "spouts:\n"
        "  - {name: source, entry: 'lc_parts:count_up'}\n"
        "workers:\n"
        "  - {name: double, entry: 'lc_parts:double', inputs: [source], host: far}\n"
    )
    started = duck.run("up", str(topology))
    assert started.returncode == 2, started.stderr
    # Before: "host 'localhost': cannot tell which address remote hosts should use …
    # set hosts.localhost.address", the real cause in parentheses.
    assert started.stderr.startswith("error: host 'far': cannot resolve 'no-such-host.invalid'")
    assert "hosts.far.address" in started.stderr
    assert not duck.leftovers(name)


def test_logs_component_picks_the_only_known_topology_that_has_it(duck: Clusterduck) -> None:
    first, second = duck.name("first"), duck.name("second")
    assert duck.up("finite", first, "--wait").returncode == 0
    end = duck.tmp / "end"
    end.touch()  # held.yaml then ends as soon as its 100 ids are through
    assert duck.up("held", second, "--wait", env={"LC_END": str(end)}).returncode == 0

    # Two known, none running, only `first` has a printer (before: exit 1, "run
    # `clusterduck logs <first> printer`").
    shown = duck.run("logs", "printer")
    assert shown.returncode == 0, shown.stderr
    assert "printer done: count=20" in shown.stdout
    assert f"(logs of {first}: the only topology with a component 'printer')" in shown.stderr


def test_what_a_sink_printed_is_shown_as_printed(duck: Clusterduck) -> None:
    """`up --wait` shows the end of each sink's output: the user's own text, trailing
    blanks included (the stripping of piped tables must not reach it)."""
    name = duck.name("padded")
    (duck.tmp / "padded_parts.py").write_text(
        "def three(dispatch):\n"
        "    for i in range(3):\n"
        "        dispatch(i, i)\n"
        "\n"
        "def padded(value):\n"
        "    print(f'row{value}   |   ', flush=True)\n"
    )
    topology = duck.tmp / "padded.yaml"
    topology.write_text(
        f"name: {name}\n"
        f"code: {duck.tmp}\n"
        "spouts:\n"
        "  - {name: source, entry: 'padded_parts:three'}\n"
        "workers:\n"
        "  - {name: show, entry: 'padded_parts:padded', inputs: [source]}\n"
    )
    ran = duck.run("up", str(topology), "--wait")
    assert ran.returncode == 0, ran.stderr
    rows = [line for line in ran.stdout.splitlines() if line.startswith("row")]
    assert sorted(rows) == [f"row{i}   |   " for i in range(3)], ran.stdout

"""The supervisor's start doubles as the host check: a typed answer in its readiness line.

``up`` starts one interpreter per host: the starter compares ``expect_version`` before it
detaches (a ``VersionMismatch`` line, exit 3, nothing started), and ``deploy`` turns a
missing interpreter or module into a RemotePythonError naming host, interpreter and fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clusterduck import __version__
from clusterduck.deploy import _start_supervisor
from clusterduck.exceptions import RemotePythonError
from clusterduck.launch.local import LocalHost
from clusterduck.protocol import (
    ComponentSpec,
    ControlRequest,
    Op,
    StepReply,
    SupervisorSpec,
    TopologySpec,
    VersionMismatch,
    decode_ready,
)
from clusterduck.runtime.procfs import pid_alive
from clusterduck.runtime.transport import request
from tests.lifecycle_fixtures import wait_until


def supervisor_spec(tmp_path: Path, expect_version: str | None) -> SupervisorSpec:
    topology = TopologySpec("t", (ComponentSpec("src", "spout", "nowhere:spout"),))
    return SupervisorSpec(
        topology,
        "localhost",
        str(tmp_path),
        str(tmp_path / "run"),
        "127.0.0.1",
        "127.0.0.1",
        expect_version=expect_version,
    )


def test_version_mismatch_is_answered_before_anything_starts(tmp_path: Path) -> None:
    spec = supervisor_spec(tmp_path, "99.0.0")
    result = subprocess.run(
        [sys.executable, "-m", "clusterduck.runtime.supervisor", "--topology", "t"],
        input=json.dumps(spec.to_dict()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == VersionMismatch.EXIT_CODE, result.stderr
    answer = decode_ready(result.stdout.strip().splitlines()[-1])
    assert isinstance(answer, VersionMismatch)
    assert answer.clusterduck == __version__ and answer.executable == sys.executable
    assert not (tmp_path / "run").exists()  # it never got as far as its run dir


def test_a_spec_from_another_release_still_gets_the_version_answer(tmp_path: Path) -> None:
    """The check runs before the spec is parsed: another release's spec may not parse."""
    result = subprocess.run(
        [sys.executable, "-m", "clusterduck.runtime.supervisor", "--topology", "t"],
        input=json.dumps({"version": 99, "expect_version": "99.0.0"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == VersionMismatch.EXIT_CODE, result.stderr
    assert isinstance(decode_ready(result.stdout.strip().splitlines()[-1]), VersionMismatch)


def test_up_turns_the_mismatch_into_a_remote_python_error(tmp_path: Path) -> None:
    with pytest.raises(RemotePythonError) as err:
        _start_supervisor("edge1", LocalHost(), sys.executable, supervisor_spec(tmp_path, "99.0.0"))
    message = str(err.value)
    assert "edge1" in message and "99.0.0" in message and __version__ in message
    assert "pip install" in message and err.value.python == sys.executable
    assert not (tmp_path / "run").exists()


def test_missing_interpreter_is_a_remote_python_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-python")
    with pytest.raises(RemotePythonError) as err:
        _start_supervisor("edge1", LocalHost(), missing, supervisor_spec(tmp_path, __version__))
    assert missing in str(err.value) and "did not run" in str(err.value)


def test_matching_version_starts_and_its_ready_line_says_the_version(tmp_path: Path) -> None:
    ready = _start_supervisor(
        "localhost", LocalHost(), sys.executable, supervisor_spec(tmp_path, __version__)
    )
    try:
        assert ready.clusterduck == __version__ and pid_alive(ready.pid)
        reply = StepReply.from_dict(
            request(ready.control, ControlRequest(Op.KILL).to_dict(), timeout=10)
        )
        assert reply.ok and reply.swept is not None  # it swept its own session
        wait_until(lambda: not pid_alive(ready.pid), timeout=30, what="the supervisor's exit")
    finally:
        if pid_alive(ready.pid):
            os.kill(ready.pid, signal.SIGKILL)


def test_the_local_address_error_names_the_remote_host_that_does_not_resolve() -> None:
    """``up`` works out this machine's address beside the remote hosts' own start; when
    no remote address resolves, its error must name them, not hide them (found by ux).
    ``::1`` cannot be reached from an IPv4 socket: a failure without any traffic."""
    from types import SimpleNamespace

    from clusterduck.deploy import _local_address_towards
    from clusterduck.exceptions import LaunchError

    record = SimpleNamespace(hosts={"edge1": SimpleNamespace(remote=True)})
    conns = {"edge1": SimpleNamespace(resolved_address="::1")}
    with pytest.raises(LaunchError) as caught:
        _local_address_towards(record, conns)  # type: ignore[arg-type]
    assert "host 'edge1' (::1)" in str(caught.value), caught.value

"""LocalHost: the no-SSH HostConnection for this machine, with real subprocesses."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterduck.exceptions import LaunchError
from clusterduck.launch.local import LocalHost, is_excluded


def pump(stream: Iterator[str]) -> queue.Queue[str | None]:
    """Read ``stream`` in a thread, so the test waits for lines with a deadline."""
    lines: queue.Queue[str | None] = queue.Queue()

    def run() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=run, daemon=True).start()
    return lines


def take(lines: queue.Queue[str | None], count: int, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    got: list[str] = []
    while len(got) < count:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        assert line is not None, f"stream ended early; got {got}"
        got.append(line)
    return got


def test_name_is_localhost() -> None:
    assert LocalHost().name == "localhost"


def test_run_output_exit_code_stdin_env() -> None:
    host = LocalHost()
    result = host.run(
        [
            sys.executable,
            "-c",
            "import sys,os; print(sys.stdin.read().upper());"
            "print(os.environ['CDT_X'], file=sys.stderr); sys.exit(4)",
        ],
        stdin=b"hi",
        env={"CDT_X": "y z"},
    )
    assert (result.returncode, result.stdout, result.stderr) == (4, "HI\n", "y z\n")
    # env is merged over this process's environment, not a replacement for it.
    assert host.run(["sh", "-c", 'printf %s "$PATH"'], env={"A": "1"}).stdout == os.environ["PATH"]


def test_missing_program_is_exit_127() -> None:
    result = LocalHost().run([f"no-such-program-{uuid.uuid4().hex}"])
    assert result.returncode == 127


def test_run_timeout_names_host_and_kills_children() -> None:
    marker = f"cdt-sleep-{uuid.uuid4().hex[:8]}"
    with pytest.raises(LaunchError, match="'localhost'"):
        # A grandchild holds the pipes: the whole process group must go.
        LocalHost().run(["sh", "-c", f"sleep 30 && echo {marker}; :"], timeout=0.5)
    result = subprocess.run(["pgrep", "-f", marker], capture_output=True)
    assert result.returncode == 1


def test_ship_to_same_dir_is_noop(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x")
    report = LocalHost().ship(tmp_path, str(tmp_path / "."))
    assert report.sent == [] and report.removed == [] and report.unchanged == 0


def test_ship_elsewhere_copies_changes(tmp_path: Path) -> None:
    code, target = tmp_path / "code", tmp_path / "target"
    (code / "pkg" / "__pycache__").mkdir(parents=True)
    (code / "pkg" / "m.py").write_text("1")
    (code / "pkg" / "__pycache__" / "m.pyc").write_text("x")
    (code / ".git").mkdir()
    (code / ".git" / "HEAD").write_text("x")
    (code / "gone.txt").write_text("x")
    host = LocalHost()
    assert sorted(host.ship(code, str(target)).sent) == ["gone.txt", "pkg/m.py"]
    again = host.ship(code, str(target))
    assert again.sent == [] and again.unchanged == 2
    (code / "gone.txt").unlink()
    assert host.ship(code, str(target)).removed == ["gone.txt"]
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "pkg",
        "pkg/m.py",
    ]


def test_is_excluded() -> None:
    assert is_excluded(".git/HEAD") and is_excluded("a/__pycache__/b.pyc")
    assert is_excluded("x.pyc") and is_excluded(".venv/bin/python")
    assert not is_excluded("pkg/mod.py") and not is_excluded("gitlike/.gitignore")


def test_read_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"\x00data")
    host = LocalHost()
    assert host.read_file(str(tmp_path / "f")) == b"\x00data"
    assert host.read_file(str(tmp_path / "missing")) is None
    assert host.read_file(str(tmp_path / "f" / "below-a-file")) is None


def test_follow_streams_and_close_kills(tmp_path: Path) -> None:
    log = tmp_path / f"follow-{uuid.uuid4().hex[:8]}.log"
    log.write_text("old\n")
    stream = LocalHost().follow(["tail", "-n", "+1", "-F", str(log)])
    lines = pump(stream)
    assert take(lines, 1) == ["old"]
    with log.open("a") as handle:
        handle.write("one\ntwo\n")
    assert take(lines, 2) == ["one", "two"]
    stream.close()  # from another thread than the reader: must still end it
    assert lines.get(timeout=10) is None
    assert subprocess.run(["pgrep", "-f", str(log)], capture_output=True).returncode == 1


def test_follow_ends_with_command() -> None:
    lines = pump(LocalHost().follow(["printf", "a\\nb"]))
    assert take(lines, 2) == ["a", "b"]
    assert lines.get(timeout=10) is None


# -- one way to start a local command (launch/spawn.py) ---------------------------------

SURROUNDINGS = (
    "import os, sys, json; "
    "print(json.dumps([os.getsid(0) == os.getpid(), os.environ.get('CD_PROBE')])); "
    "sys.stdout.flush(); print(sys.stdin.read(), file=sys.stderr)"
)


def test_run_and_the_early_supervisor_start_commands_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LocalHost.finish`` completes a command that ``prestart.EarlySupervisor`` started
    as if ``run`` had started it: both go through ``spawn.start_piped`` (own session,
    pipes on all three streams, this environment)."""
    from clusterduck.launch.spawn import start_piped
    from clusterduck.prestart import EarlySupervisor

    monkeypatch.setenv("CD_PROBE", "inherited")
    argv = [sys.executable, "-c", SURROUNDINGS]
    host = LocalHost()
    by_run = host.run(argv, stdin=b"fed")
    by_hand = host.finish(start_piped(argv), argv, stdin=b"fed")
    assert by_run == by_hand
    assert by_run.returncode == 0 and by_run.stderr == "fed\n"
    assert by_run.stdout.strip() == '[true, "inherited"]'

    topology = tmp_path / "t.yaml"
    topology.write_text("name: spawn-probe\n")
    early = EarlySupervisor.start(topology)
    assert early is not None and early.popen is not None
    try:
        pid = early.popen.pid
        assert os.getsid(pid) == pid
        assert None not in (early.popen.stdin, early.popen.stdout, early.popen.stderr)
    finally:
        early.discard()

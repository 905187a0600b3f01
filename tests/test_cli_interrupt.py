"""Ctrl-C while the ``clusterduck`` command is still importing exits quietly with 130.

The child is a real ``clusterduck`` process. A ``sitecustomize`` on its PYTHONPATH (test
scaffolding, in the child only) holds the import of ``click`` — the first thing the
command line imports — until a signal arrives, and says so on stdout: the test waits for
that line (no sleep), then sends a real SIGINT, so the interrupt lands inside the import."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.procs import interrupt

STALL = '''
import os, signal, sys

class _StallClick:
    """Hold the first import of click until a signal comes (then Python raises
    KeyboardInterrupt from signal.pause, inside the import)."""

    def find_spec(self, name, path=None, target=None):
        if name == "click":
            sys.meta_path.remove(self)
            os.write(1, b"importing click\\n")
            signal.pause()
        return None

sys.meta_path.insert(0, _StallClick())
'''


def _console_script() -> Path:
    """Where pip put the ``clusterduck`` script for this interpreter (``scripts`` of
    its install scheme; Debian's system python installs into /usr/local/bin)."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if (Path(folder) / "clusterduck").is_file():
            return Path(folder) / "clusterduck"
    found = shutil.which("clusterduck")
    return Path(found) if found else Path(sys.executable).parent / "clusterduck"


SCRIPT = _console_script()


def read_line(fd: int, timeout: float) -> bytes:
    """One line from ``fd`` within ``timeout`` seconds (polled, never slept)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no line within {timeout} s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"the process ended before the line (got {data!r})")
        data += chunk
    return data


@pytest.mark.parametrize(
    "argv",
    [[str(SCRIPT), "--help"], [sys.executable, "-m", "clusterduck", "--help"]],
    ids=["console-script", "python-m"],
)
def test_ctrl_c_while_the_cli_imports_exits_130_without_a_traceback(
    argv: list[str], tmp_path: Path
) -> None:
    if not Path(argv[0]).is_file():
        assert not os.environ.get("CI"), f"{argv[0]} is not installed: CI runs pip install -e ."
        pytest.skip(f"{argv[0]} is not installed (pip install -e . makes it)")
    (tmp_path / "sitecustomize.py").write_text(STALL)
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *inherited]))
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert child.stdout is not None
    stdout = child.stdout.fileno()

    def importing() -> None:
        assert read_line(stdout, 60) == b"importing click\n"

    out, err = interrupt(child, importing)
    assert err.decode() == ""  # no traceback, no "KeyboardInterrupt"
    assert out == b""  # the help never ran: interrupted inside the import
    assert child.returncode == 130

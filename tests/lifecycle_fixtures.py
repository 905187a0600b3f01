"""Helpers for tests/test_lifecycle.py: drive the real ``clusterduck`` CLI in a subprocess
with its own ``$CLUSTERDUCK_HOME``, and look at processes through the OS (``/proc``).

Nothing here sleeps to wait for an outcome: :func:`wait_until` polls with a deadline.
:meth:`Clusterduck.cleanup` runs ``down --force`` on every topology a test started, then
kills (and reports) anything of theirs still alive, so that no test leaves processes behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.procs import (
    cmdline,
    interrupt,
    pid_alive,
    processes_matching,
    rss_kb,
    session_members,
)

__all__ = [
    "CLI",
    "TOPOLOGIES",
    "Clusterduck",
    "instance",
    "interrupt",
    "pid_alive",
    "processes_matching",
    "rss_kb",
    "wait_until",
]

# `python -m clusterduck.cli` dies on a circular import (cli.py run as __main__ imports
# cli_lifecycle, which imports clusterduck.cli a second time); `-m clusterduck` is the
# same command through clusterduck/__main__.py.
CLI = [sys.executable, "-m", "clusterduck"]
TOPOLOGIES = Path(__file__).resolve().parent / "lifecycle_topologies"
CLI_TIMEOUT = 120.0
ACTIVE = ("starting", "running")

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call ``predicate`` until it returns something truthy (returned); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def instance(status: dict[str, Any], component: str, index: int = 0) -> dict[str, Any]:
    """One instance row of a ``status --json`` document."""
    for comp in status["components"]:
        if comp["name"] == component:
            for row in comp["instances"]:
                if row["index"] == index:
                    return row
    raise KeyError(f"{component}/{index} not in status of {status.get('name')}")


class Clusterduck:
    """The CLI, run as a subprocess against a private ``$CLUSTERDUCK_HOME``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
        self.env["CLUSTERDUCK_HOME"] = str(self.home)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.names: list[str] = []
        self.seen_pids: dict[str, set[int]] = {}

    # -- running the CLI -----------------------------------------------------------

    def name(self, label: str) -> str:
        """A topology name unique to this test, so /proc scans see only its processes."""
        name = f"lcd-{label}-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.tmp,
        )

    def up(
        self, topology: str, name: str, *flags: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``up`` of ``lifecycle_topologies/<topology>.yaml`` under the name ``name``."""
        if name not in self.names:
            self.names.append(name)
        path = TOPOLOGIES / f"{topology}.yaml"
        return self.run("up", str(path), *flags, env={"LC_NAME": name, **(env or {})})

    def status(self, name: str) -> dict[str, Any]:
        result = self.run("status", name, "--json")
        assert result.returncode == 0, f"status {name} exit {result.returncode}: {result.stderr}"
        doc: dict[str, Any] = json.loads(result.stdout)
        self._remember(name, doc)
        return doc

    def down(self, name: str, *flags: str) -> subprocess.CompletedProcess[str]:
        return self.run("down", name, *flags)

    # -- what the OS and the state folder say -----------------------------------------

    def record(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.home / "topologies" / name / "state.json").read_text()
        )
        return data

    def supervisor_pid(self, name: str) -> int:
        return int(self.record(name)["hosts"]["localhost"]["pid"])

    def _remember(self, name: str, doc: dict[str, Any]) -> None:
        pids = self.seen_pids.setdefault(name, set())
        for comp in doc["components"]:
            pids.update(r["pid"] for r in comp["instances"] if r.get("pid"))

    def leftovers(self, name: str) -> dict[int, str]:
        """Everything of topology ``name`` still alive: pids seen in its status, its
        supervisor (and its session), and any process naming it on its command line."""
        found = processes_matching(name)
        for pid in self.seen_pids.get(name, set()):
            if pid_alive(pid) and "clusterduck" in cmdline(pid):
                found[pid] = cmdline(pid)
        try:
            sup = self.supervisor_pid(name)
        except (OSError, KeyError, ValueError):
            sup = 0
        if sup and pid_alive(sup) and "clusterduck" in cmdline(sup):
            found[sup] = cmdline(sup)
        if sup:
            found.update(session_members(sup))
        return found

    # -- teardown --------------------------------------------------------------------

    def cleanup(self) -> None:
        """``down --force`` whatever may still run, then kill and report any leftover."""
        left: dict[str, dict[int, str]] = {}
        for name in self.names:
            try:
                active = self.record(name)["status"] in ACTIVE
            except (OSError, KeyError, ValueError):
                active = False
            if active or self.leftovers(name):
                self.run("down", name, "--force", timeout=60)
            rest = self.leftovers(name)
            if rest:
                left[name] = rest
                for pid in rest:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for rest in left.values():
            wait_until(
                lambda r=rest: not any(pid_alive(p) for p in r),
                timeout=10,
                what="leftover processes to die",
            )
        assert not left, f"`down --force` left processes behind (killed now): {left}"

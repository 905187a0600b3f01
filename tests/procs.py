"""Processes as the OS shows them (``/proc``), for tests that check what really runs.

The tests keep their own reading of ``/proc`` rather than the product's, so that a bug in
clusterduck's process handling cannot hide itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "cmdline",
    "interrupt",
    "pid_alive",
    "processes_matching",
    "rss_kb",
    "session_members",
]


def interrupt(
    proc: subprocess.Popen[Any], ready: Callable[[], object], timeout: float = 60
) -> tuple[Any, Any]:
    """Ctrl-C for a command once ``ready()`` returned (it waits, with a deadline, for the
    moment to interrupt): its stdout and stderr. Killed if it outlives ``timeout``."""
    try:
        ready()
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, …]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid)
    return fields is None or fields[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
            .strip()
        )
    except OSError:
        return ""


def processes_matching(text: str) -> dict[int, str]:
    """Live processes (not this one) whose command line contains ``text``: {pid: cmdline}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        command = cmdline(pid)
        if text in command and pid_alive(pid):
            found[pid] = command
    return found


def session_members(session: int) -> dict[int, str]:
    """Live clusterduck processes in the session ``session`` (a supervisor's, after setsid)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = stat_fields(pid)
        if fields and int(fields[3]) == session and pid_alive(pid):
            command = cmdline(pid)
            if "clusterduck" in command:
                found[pid] = command
    return found


def rss_kb(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (VmRSS), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None

"""This host's processes as the kernel shows them in ``/proc`` (Linux).

The supervisor sweeps its session with it and the CLI checks a local supervisor's pid:
one place that knows the layout of ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ..protocol import topology_marker

__all__ = ["pid_alive", "session_members", "sweep"]


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: [state, ppid, pgrp, session, …]."""
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
    fields = _stat_fields(pid)
    return fields is None or fields[0] not in ("Z", "X")


def session_members(session: int, marker: bytes = b"clusterduck") -> list[int]:
    """Live pids in ``session`` whose command line contains ``marker`` (never our own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        fields = _stat_fields(int(entry.name))
        if not fields or int(fields[3]) != session or fields[0] in ("Z", "X"):
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def sweep(session: int, topology: str) -> int:
    """Kill every process of ``topology`` left in a supervisor's session; how many."""
    killed = 0
    marker = "\0".join(topology_marker(topology)).encode() + b"\0"
    for pid in session_members(session, marker):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed

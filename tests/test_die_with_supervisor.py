"""forkserver.die_with_supervisor: a process never outlives its supervisor unseen.

The whole-topology case (kill -9 of a supervisor, forked and fresh processes) is in
test_lifecycle.py; here the race it must survive: the supervisor dies *before* the
process became its child, and nobody reaps it (a zombie still answers ``kill(pid, 0)``).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

import pytest

from clusterduck.runtime import forkserver

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_a_process_whose_supervisor_died_unreaped_before_adopting_it_leaves() -> None:
    read, write = os.pipe()  # the process writes "ran on" if it did not leave
    started_r, started_w = os.pipe()  # the supervisor says it started the process
    supervisor = os.fork()
    if supervisor == 0:  # the supervisor: starts the process, then waits to be killed
        me = os.getpid()
        child = os.fork()
        if child == 0:
            os.close(read)
            while os.getppid() == me:  # until the supervisor is dead (and we adopted)
                time.sleep(0.005)
            os.environ[forkserver.SUPERVISOR_PID] = str(me)
            forkserver.die_with_supervisor(within=20.0)
            os.write(write, b"ran on")  # not reached: it left
            os._exit(0)
        os.write(started_w, str(child).encode())
        time.sleep(60)
        os._exit(0)
    os.close(write)
    os.close(started_w)
    try:
        ready, _, _ = select.select([started_r], [], [], 15)
        assert ready and os.read(started_r, 20), "the supervisor did not start its process"
        os.kill(supervisor, signal.SIGKILL)  # not reaped until the end: a zombie
        ready, _, _ = select.select([read], [], [], 15)
        assert ready, "the process neither left nor ran on within 15 s"
        assert os.read(read, 100) == b"", "the process ran on without its supervisor"
        with open(f"/proc/{supervisor}/stat", "rb") as fh:
            assert fh.read().rpartition(b")")[2].split()[0] == b"Z"  # still unreaped
    finally:
        os.close(read)
        os.close(started_r)
        os.waitpid(supervisor, 0)

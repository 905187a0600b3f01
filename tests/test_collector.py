"""The test collector (``clusterduck.testing.run_processes``) gets every frame a sink sent,
and its end of stream, however slowly it reads.

A sink reports ``finished`` once its last frames and end of stream are queued in its
socket, and then lingers until they have left. Its supervisor used to take the report
for the exit and kill whatever of the topology was left in its session: a sink whose
frames still waited (over ipc a unix socket buffers ~200 KiB; a test process on a loaded
machine reads late) lost them and its end of stream, and the test waited for its
timeout (4 of 81 runs of tests/topologies/parallel.yaml under load). Here the collector
runs in a process of its own and is stopped (SIGSTOP) while the sink sends, so the
frames wait in the sink whatever the machine's load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lifecycle_fixtures import TOPOLOGIES, wait_until

from clusterduck import deploy
from clusterduck.loader import load
from clusterduck.protocol import State

PEER = Path(__file__).resolve().parent / "collector_peer.py"
COUNT = 4
SIZE = 256 * 1024  # 1 MiB in all: more than a unix socket buffers, fewer frames than the HWM


def test_a_finished_sink_keeps_its_frames_until_a_stopped_collector_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"lcd-collected-{uuid.uuid4().hex[:8]}"
    go = tmp_path / "go"
    monkeypatch.setenv("CLUSTERDUCK_HOME", str(tmp_path / "home"))
    env = {"LC_NAME": name, "LC_GO": str(go), "LC_COUNT": str(COUNT), "LC_SIZE": str(SIZE)}
    tf = load(TOPOLOGIES / "collected.yaml", environ={**os.environ, **env})
    assert tf.topology.uses_private_ipc  # the collector is on ipc, as in run_processes
    peer = subprocess.Popen(
        [sys.executable, str(PEER), "--topology", name, "--senders", "1", "--idle", "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    record = None
    try:
        assert peer.stdout is not None
        endpoint = peer.stdout.readline().strip()
        assert endpoint.startswith("ipc://"), endpoint
        record = deploy.start(tf, collector=endpoint)  # the sink is connected now
        os.kill(peer.pid, signal.SIGSTOP)
        go.touch()

        def finished() -> bool:
            status = deploy.topology_status(record)
            return all(
                row.state is State.FINISHED for comp in status.components for row in comp.instances
            )

        wait_until(finished, timeout=60, what="every instance to report finished")
        os.kill(peer.pid, signal.SIGCONT)
        out, _ = peer.communicate(timeout=90)
        got = json.loads(out.splitlines()[-1])
        assert got == {"messages": {"sink/0": COUNT}, "ended": ["sink/0"]}, got
    finally:
        if peer.poll() is None:
            os.kill(peer.pid, signal.SIGCONT)
            peer.kill()
            peer.wait()
        if record is not None:
            cluster = deploy.Cluster(record)
            cluster.stop(timeout=5, force=True)
            cluster.close()

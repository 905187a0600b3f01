"""How a spout's process ends at a graceful ``down``, besides its function's end.

A spout that leaves a thread running (not a daemon: an ordinary exit waits for it)
still lets a graceful ``down`` end its process: the thread gets what is left of the 5 s
grace, then the process leaves without it and its log names it. Before, the process
waited for the thread after it reported the end of its stream; its supervisor waited for
the process, ``down`` swept them both, and the run folder had no ``final.json``.

Real processes through the CLI (``lifecycle_fixtures``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from lifecycle_fixtures import CLI, Clusterduck, instance, wait_until
from topology_files import write_topology

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

PARTS = '''\
import os, threading, time


def flusher_then_ten(dispatch, go):
    """Starts a thread of its own that outlives it, sends ten ids, then (once the file
    ``go`` exists) more until the down's SpoutStopped ends it."""
    threading.Thread(target=time.sleep, args=(120,), name="own-flusher", daemon=False).start()
    _ten_then_more(dispatch, go)


class InitReader:
    """A class spout whose __init__ opens its source with a reader thread (started from
    the process's main thread: not a daemon), as a client library may."""

    def __init__(self, go):
        self.go = go
        threading.Thread(target=time.sleep, args=(120,), name="init-reader").start()

    def __call__(self, dispatch):
        _ten_then_more(dispatch, self.go)


def pool_then_ten(dispatch, go):
    """A blocking read in a thread pool of its own, still blocked at the down (the
    interpreter joins every pool's threads at exit, daemons or not)."""
    from concurrent.futures import ThreadPoolExecutor

    ThreadPoolExecutor(1, thread_name_prefix="own-pool").submit(time.sleep, 120)
    _ten_then_more(dispatch, go)


def _ten_then_more(dispatch, go):
    """Ten ids, then (once the file ``go`` exists) more until the down ends it."""
    for i in range(10):
        dispatch(i, i)
    while not os.path.exists(go):
        time.sleep(0.02)
    i = 10
    while True:
        dispatch(i, i)
        i += 1
        time.sleep(0.01)


def keep(value):
    return value
'''


@pytest.mark.parametrize(
    ("entry", "thread", "start"),
    [
        ("flusher_then_ten", "own-flusher", "fork"),
        ("InitReader", "init-reader", "fork"),  # started before the spout's own thread
        ("pool_then_ten", "own-pool_0", "spawn"),  # a daemon, but a pool's: joined at exit
    ],
)
def test_a_thread_the_spout_left_running_does_not_hold_the_down(
    duck: Clusterduck, entry: str, thread: str, start: str
) -> None:
    go = duck.tmp / "go"
    name = _up_spout_into_sink(
        duck,
        "threads_parts",
        PARTS,
        "ownthread",
        f"{entry}', args: {{go: '{go}'}}",
        {"CLUSTERDUCK_START": start},
    )
    wait_until(
        lambda: instance(duck.status(name), "sink")["received"] >= 10,
        what="the first ten ids at the sink",
    )
    # The spout dispatches again once `go` exists, so it meets the down in dispatch
    # (and ends there) whenever the down reaches it.
    down = subprocess.Popen(
        [*CLI, "down", name, "--timeout", "30"],
        env=duck.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=duck.tmp,
    )
    go.touch()
    out, err = down.communicate(timeout=120)
    assert down.returncode == 0, err
    final = duck.status(name)
    assert not [p for p in final["problems"] if "killed" in p], final["problems"]
    assert [r["state"] for c in final["components"] for r in c["instances"]] == ["finished"] * 2
    sent, got = instance(final, "source")["emitted"], instance(final, "sink")["received"]
    assert sent == got >= 10  # what it dispatched before the down drained
    run_dir = Path(duck.record(name)["hosts"]["localhost"]["run_dir"])
    assert (run_dir / "final.json").exists()
    log = duck.run("logs", name, "source")
    assert f"left 1 thread(s) running after the graceful down ({thread})" in log.stdout
    assert not duck.leftovers(name)


RESTART_PARTS = '''\
import os, time


def counted_then_wait(dispatch, calls):
    """Notes each call, sends ten ids, then waits for a source that never answers."""
    with open(calls, "a") as f:
        f.write("called\\n")
    for i in range(10):
        dispatch(i, i)
    while True:
        time.sleep(0.05)


def keep(value):
    return value
'''


def test_a_spout_restarted_during_a_down_is_not_called_again(duck: Clusterduck) -> None:
    """Its stream is over before it begins: calling the function again opened its source
    for nothing (its first dispatch was refused; one that waits for its source first held
    the down for the 5 s grace)."""
    calls = duck.tmp / "calls"
    name = _up_spout_into_sink(
        duck,
        "restart_parts",
        RESTART_PARTS,
        "rdown",
        f"counted_then_wait', args: {{calls: '{calls}'}}",
    )
    source = wait_until(
        lambda: (s := duck.status(name)) and instance(s, "sink")["received"] == 10 and s,
        what="the ten ids at the sink",
    )
    pid = instance(source, "source")["pid"]
    down = subprocess.Popen(
        [*CLI, "down", name, "--timeout", "30"],
        env=duck.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=duck.tmp,
    )
    # The spout waits for its source: the down's grace holds it for 5 s, time enough to
    # kill it; its supervisor restarts it with the down under way.
    wait_until(
        lambda: instance(duck.status(name), "source")["state"] == "draining",
        what="the spout to hear of the down",
    )
    os.kill(pid, signal.SIGKILL)
    out, err = down.communicate(timeout=120)
    assert down.returncode == 0, err
    final = duck.status(name)
    row = instance(final, "source")
    assert row["restarts"] == 1 and row["state"] == "finished", row
    assert instance(final, "sink")["received"] == 10
    assert calls.read_text().splitlines() == ["called"]  # before: called twice
    assert not duck.leftovers(name)


def _up_spout_into_sink(
    duck: Clusterduck,
    module: str,
    text: str,
    label: str,
    spout: str,
    env: dict[str, str] | None = None,
) -> str:
    """``up`` of ``source`` (``module:`` + ``spout``, its entry's rest and args) into a
    sink that keeps each value, with ``text`` as ``module``; the topology's name."""
    (duck.tmp / f"{module}.py").write_text(text)
    name, topology = write_topology(
        duck,
        label,
        duck.tmp,
        [f"{{name: source, entry: '{module}:{spout}}}"],
        [f"{{name: sink, entry: '{module}:keep', inputs: [source]}}"],
    )
    started = duck.run("up", str(topology), env=env)
    assert started.returncode == 0, started.stderr
    return name

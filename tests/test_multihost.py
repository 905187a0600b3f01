"""Many machines: real sshd servers in network namespaces, driven through the CLI.

Each host h1..h3 is a namespace with its own address (10.231.7.11-13), sshd, host key
and workdir; this machine (``localhost``) reaches them over a bridge. The ten-host test
builds ten more (10.231.8.11-20) beside them. Nothing is mocked.
"""

from __future__ import annotations

import collections
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Cluster, SshHome, make_ssh_home, skip_reason
from tests.procs import cmdline

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parent.parent
WORDCOUNT = REPO / "topologies" / "wordcount"

STREAM_MODULE = """
import itertools, time

def forever(dispatch, delay=0.001):
    for i in itertools.count():
        dispatch(i, i)
        time.sleep(delay)

def double(x):
    return 2 * x

def sink(x):
    return None
"""


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")


class CLI:
    def __init__(self, home: SshHome, state: Path) -> None:
        self.env = {**os.environ, "HOME": str(home.home), "CLUSTERDUCK_HOME": str(state)}
        self.env.pop("SSH_AUTH_SOCK", None)

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clusterduck", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self, name: str) -> dict[str, Any]:
        result = self("status", name, "--json", timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(ssh_home: SshHome, tmp_path: Path) -> Any:
    runner = CLI(ssh_home, tmp_path / "state")
    yield runner
    for name in ("wc3", "stream3", "keys", "badpy", "down1", "outage"):
        runner("down", name, "--force", timeout=120)


def hosts_block(cluster: Cluster, workdirs: dict[str, str] | None = None) -> str:
    lines = ["hosts:"]
    for h in cluster.hosts:
        workdir = (workdirs or {}).get(h.name, str(h.workdir))
        lines += [
            f"  {h.name}:",
            f"    address: {h.name}",
            f"    python: {sys.executable}",
            f"    workdir: {workdir}",
        ]
    return "\n".join(lines) + "\n"


def clusterduck_pids(cluster: Cluster) -> dict[str, list[int]]:
    """Processes of ours (not sshd) in each host's namespace."""
    found: dict[str, list[int]] = {}
    for h in cluster.hosts:
        pids = subprocess.run(
            ["ip", "netns", "pids", h.netns], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            if "clusterduck" in cmdline(int(pid)):
                found.setdefault(h.name, []).append(int(pid))
    return found


def write_wordcount(tmp_path: Path, cluster: Cluster) -> Path:
    shutil.copytree(
        WORDCOUNT, tmp_path / "wordcount", ignore=shutil.ignore_patterns("results", "__pycache__")
    )
    path = tmp_path / "wc3.yaml"
    path.write_text(f"""name: wc3
code: wordcount
{hosts_block(cluster)}
spouts:
  - name: lines
    entry: wordcount:read_lines
    args: {{path: data/lines.txt}}
    host: h1
workers:
  - name: split
    entry: wordcount:split
    inputs: [lines]
    parallelism: 3
    host: [h1, h2, h3]
  - name: count
    entry: wordcount:Counter
    inputs: [split]
    grouping: key
    key: wordcount:word_of
    parallelism: 2
    host: [h2, h3]
  - name: top
    entry: wordcount:Top
    inputs: [count]
    args: {{out: results/counts.txt}}
    host: h3
""")
    return path


def write_stream(
    tmp_path: Path, cluster: Cluster, name: str = "stream3", workdirs: dict[str, str] | None = None
) -> Path:
    code = tmp_path / "stream"
    code.mkdir(exist_ok=True)
    (code / "stream.py").write_text(STREAM_MODULE)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
code: stream
{hosts_block(cluster, workdirs)}
spouts:
  - name: src
    entry: stream:forever
    host: h1
workers:
  - name: dbl
    entry: stream:double
    inputs: [src]
    parallelism: 2
    host: [h2, h3]
  - name: out
    entry: stream:sink
    inputs: [dbl]
    host: h1
""")
    return path


def test_wordcount_over_three_hosts(cli: CLI, netns_hosts: Cluster, tmp_path: Path) -> None:
    path = write_wordcount(tmp_path, netns_hosts)
    result = cli("up", str(path), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr

    sys.path.insert(0, str(WORDCOUNT))
    try:
        import wordcount  # the example's own splitting, applied here without clusterduck
    finally:
        sys.path.remove(str(WORDCOUNT))
    expected: collections.Counter[str] = collections.Counter()
    for line in (WORDCOUNT / "data" / "lines.txt").read_text().splitlines():
        expected.update(wordcount.split(line))
    out = netns_hosts["h3"].workdir / "code" / "wc3" / "results" / "counts.txt"
    got = {}
    for line in out.read_text().splitlines():
        word, count = line.split("\t")
        got[word] = int(count)
    assert got == dict(expected)

    status = cli.status("wc3")
    hosts = {row["host"] for comp in status["components"] for row in comp["instances"]}
    assert hosts == {"h1", "h2", "h3"}
    assert cli("down", "wc3").returncode == 0
    assert clusterduck_pids(netns_hosts) == {}


@pytest.fixture
def remote_home_workdir() -> Any:
    """A workdir written with `~`, as the default `~/.clusterduck` is: `~` is the remote
    user's home (root's, on these hosts), not the home of whoever runs `up`."""
    relative = f".cdt-tilde-{os.getpid()}"
    yield f"~/{relative}", Path(pwd.getpwnam("root").pw_dir) / relative
    shutil.rmtree(Path(pwd.getpwnam("root").pw_dir) / relative, ignore_errors=True)


def test_status_and_down_across_hosts(
    cli: CLI, netns_hosts: Cluster, tmp_path: Path, remote_home_workdir: tuple[str, Path]
) -> None:
    tilde, expanded = remote_home_workdir
    path = write_stream(tmp_path, netns_hosts, workdirs={"h2": tilde})
    result = cli("up", str(path))
    assert result.returncode == 0, result.stderr
    status = wait_until(
        lambda: (
            (s := cli.status("stream3"))["components"][-1]["instances"][0]["received"] > 0 and s
        ),
        what="messages reaching the sink",
    )
    by_host = collections.defaultdict(list)
    for comp in status["components"]:
        for row in comp["instances"]:
            by_host[row["host"]].append(row["state"])
    assert set(by_host) == {"h1", "h2", "h3"}
    assert all(state == "running" for states in by_host.values() for state in states)
    assert set(clusterduck_pids(netns_hosts)) == {"h1", "h2", "h3"}
    # Every `up` is a run of its own: runs/<name>/<run>/logs (the first run is 1).
    assert (expanded / "runs" / "stream3" / "1" / "logs" / "dbl.0.log").exists()
    assert (expanded / "code" / "stream3" / "stream.py").exists()
    logs = cli("logs", "stream3", "supervisor", "-n", "3")
    assert logs.returncode == 0 and str(expanded) in logs.stdout

    down = cli("down", "stream3")
    assert down.returncode == 0, down.stderr
    assert clusterduck_pids(netns_hosts) == {}
    final = cli.status("stream3")
    emitted = final["components"][0]["instances"][0]["emitted"]
    received = final["components"][-1]["instances"][0]["received"]
    assert emitted == received > 0  # graceful drain across hosts: nothing lost


def test_unreachable_host_fails_up_and_leaves_nothing(
    cli: CLI, netns_hosts: Cluster, tmp_path: Path
) -> None:
    netns_hosts["h3"].stop_sshd()
    path = write_stream(tmp_path, netns_hosts)
    result = cli("up", str(path))
    assert result.returncode == 2
    assert "h3" in result.stderr
    assert clusterduck_pids(netns_hosts) == {}


def test_unknown_host_key_refused_unless_accepted(
    cli: CLI, ssh_home: SshHome, netns_hosts: Cluster, tmp_path: Path
) -> None:
    ssh_home.known_hosts.write_text("")
    path = write_stream(tmp_path, netns_hosts, name="keys")
    result = cli("up", str(path))
    assert result.returncode == 2
    assert "--accept-new-host-keys" in result.stderr
    assert re.search(r"h[123]", result.stderr)
    assert clusterduck_pids(netns_hosts) == {}

    result = cli("up", str(path), "--accept-new-host-keys")
    assert result.returncode == 0, result.stderr
    recorded = ssh_home.known_hosts.read_text()
    assert all(h.address in recorded for h in netns_hosts.hosts)


def test_remote_python_without_clusterduck(cli: CLI, netns_hosts: Cluster, tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    path = write_stream(tmp_path, netns_hosts, name="badpy")
    text = path.read_text().replace(
        f"    python: {sys.executable}\n    workdir: {netns_hosts['h2'].workdir}",
        f"    python: {venv}/bin/python\n    workdir: {netns_hosts['h2'].workdir}",
    )
    path.write_text(text)
    result = cli("up", str(path))
    assert result.returncode == 2
    assert "h2" in result.stderr
    assert "clusterduck" in result.stderr and str(venv) in result.stderr
    assert "pip install" in result.stderr
    assert clusterduck_pids(netns_hosts) == {}


def test_cut_link_shows_unreachable_and_force_down_cleans_rest(
    cli: CLI, netns_hosts: Cluster, tmp_path: Path
) -> None:
    path = write_stream(tmp_path, netns_hosts, name="down1")
    assert cli("up", str(path)).returncode == 0
    wait_until(lambda: cli.status("down1")["state"] == "running", what="running")
    netns_hosts["h3"].link_down()
    status = wait_until(
        lambda: (s := cli.status("down1"))["state"] == "broken" and s, what="broken state"
    )
    h3_rows = [
        row for comp in status["components"] for row in comp["instances"] if row["host"] == "h3"
    ]
    assert h3_rows and all(row["state"] == "unreachable" for row in h3_rows)

    result = cli("down", "down1", "--force")
    assert result.returncode == 0, result.stderr
    left = clusterduck_pids(netns_hosts)
    assert "h1" not in left and "h2" not in left


def test_at_least_once_survives_a_network_outage_of_a_host(
    cli: CLI, netns_hosts: Cluster, tmp_path: Path
) -> None:
    """The host running w1 loses its network for a few seconds mid-stream under
    at-least-once: every id still reaches the sink (replayed if the outage lost it). The
    acks ride back on the CURVE data connections, like credit grants."""
    count, go = 20_000, tmp_path / "go"
    code = tmp_path / "gd"
    code.mkdir()
    shutil.copy(REPO / "tests" / "guarantee_topologies" / "gd_parts.py", code / "gd_parts.py")
    path = tmp_path / "outage.yaml"
    path.write_text(f"""name: outage
code: gd
{hosts_block(netns_hosts)}
spouts:
  - name: ids
    entry: gd_parts:ids
    args: {{count: {count}, hold: "{go}"}}
    host: h1
workers:
  - name: w1
    entry: gd_parts:relay
    inputs: [ids]
    args: {{ms: 0.5}}
    host: h2
  - name: sink
    entry: gd_parts:Recorder
    inputs: [w1]
    args: {{out: out.txt}}
    host: h3
settings:
  guarantee: at-least-once
  message_timeout: 10s
""")
    out = netns_hosts["h3"].workdir / "code" / "outage" / "out.txt"

    def seqs() -> list[int]:
        try:
            text = out.read_text()
        except FileNotFoundError:
            return []
        return [int(line.split()[0]) for line in text.splitlines() if len(line.split()) == 2]

    result = cli("up", str(path))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(seqs()) >= 1000, what="the stream to be under way")
    netns_hosts["h2"].link_down()
    try:
        go.touch()
        time.sleep(3)  # the outage itself (not a wait for something)
    finally:
        netns_hosts["h2"].link_up()
    try:
        status = wait_until(
            lambda: (s := cli.status("outage"))["state"] == "finished" and s,
            timeout=240,
            what="the topology to finish",
        )
    except AssertionError:
        print(cli("status", "outage").stdout, cli("logs", "outage", "-n", "15").stdout)
        raise
    assert set(seqs()) == set(range(count))
    spout = status["components"][0]["instances"][0]
    assert spout["pending"] == 0
    assert cli("down", "outage").returncode == 0


@pytest.fixture(scope="module")
def ten_hosts() -> Any:
    """Ten more hosts (10.231.8.11-20) beside the session's three, for this module."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(count=10, subnet="10.231.8", label="t").start()
    try:
        yield cluster
    finally:
        cluster.close()


def rows_by_host(status: dict[str, Any]) -> dict[str, set[str]]:
    """The states of each host's instance rows in one ``status --json``."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for comp in status["components"]:
        for row in comp["instances"]:
            found[row["host"]].add(row["state"])
    return found


def test_ten_hosts_up_status_unreachable_down(ten_hosts: Cluster, tmp_path: Path) -> None:
    """up over ten hosts, status lists all, a cut cable shows on that host alone (the
    other nine answer in the same status), and down leaves nothing on any host."""
    cli = CLI(make_ssh_home(ten_hosts, tmp_path / "home"), tmp_path / "state")
    names = [h.name for h in ten_hosts.hosts]
    path = write_stream(tmp_path, ten_hosts, name="ten")
    text = path.read_text()
    assert "    parallelism: 2\n    host: [h2, h3]" in text
    path.write_text(
        text.replace(
            "    parallelism: 2\n    host: [h2, h3]",
            f"    parallelism: 10\n    host: [{', '.join(names)}]",
        )
    )
    try:
        result = cli("up", str(path))
        assert result.returncode == 0, result.stderr
        assert set(clusterduck_pids(ten_hosts)) == set(names)

        status = wait_until(
            lambda: (s := cli.status("ten"))["state"] == "running" and s, what="running"
        )
        assert set(status["hosts"]) == set(names)
        assert set(rows_by_host(status)) == set(names)

        ten_hosts["h5"].link_down()
        try:
            status = wait_until(
                lambda: (s := cli.status("ten"))["hosts"]["h5"] == "unreachable" and s,
                what="h5 unreachable",
            )
            by_host = rows_by_host(status)
            assert by_host["h5"] == {"unreachable"}
            assert status["state"] == "broken"
            assert any("h5" in p for p in status["problems"])
            # The other nine answered in the same round and show their processes.
            assert all(status["hosts"][h] == "running" for h in names if h != "h5")
            assert all(by_host[h] and "unreachable" not in by_host[h] for h in names if h != "h5")
        finally:
            ten_hosts["h5"].link_up()

        down = cli("down", "ten", "--timeout", "20")
        assert down.returncode == 0, down.stderr
        assert clusterduck_pids(ten_hosts) == {}
    finally:
        cli("down", "ten", "--force", timeout=120)

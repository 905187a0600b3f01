"""SSHHost against real sshds in network namespaces (tests/netns.py): no mocks.

Every wait polls with a deadline; every remote call has a timeout, so nothing here can
hang the suite.
"""

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

from clusterduck.exceptions import (
    AuthenticationFailed,
    HostKeyRefused,
    HostUnreachable,
    LaunchError,
)
from clusterduck.launch.ssh import SSHHost
from clusterduck.topology import Host

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hosts(ssh_home: object) -> Iterator[list[SSHHost]]:
    """Creates SSHHosts (after HOME points at the test ~/.ssh) and closes them all."""
    made: list[SSHHost] = []
    yield made
    for host in made:
        host.close()


def ssh(made: list[SSHHost], name: str, host: Host | None = None, **kw: object) -> SSHHost:
    kw.setdefault("connect_timeout", 3.0)
    connection = SSHHost(name, host or Host(), **kw)  # type: ignore[arg-type]
    made.append(connection)
    return connection


def pump(stream: Iterator[str]) -> queue.Queue[str | None]:
    """Read ``stream`` in a thread, so the test can wait for lines with a deadline."""
    lines: queue.Queue[str | None] = queue.Queue()

    def run() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=run, daemon=True).start()
    return lines


def wait_for(lines: queue.Queue[str | None], want: list[str], timeout: float = 10) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not set(want) <= set(got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"wanted {want}, got only {got}"
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        assert line is not None, f"stream ended early; got {got}"
        got.append(line)
    return got


def wait_until(predicate: object, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- connecting --------------------------------------------------------------------------


def test_connects_through_ssh_config_alias(hosts, netns_hosts) -> None:
    h1 = ssh(hosts, "h1")
    result = h1.run(["sh", "-c", "echo $SSH_CONNECTION"])
    assert result.returncode == 0
    assert result.stdout.split()[2] == netns_hosts["h1"].address
    assert h1.resolved_address == netns_hosts["h1"].address
    # `address` is the alias to look up; the HostName is what others connect to.
    edge = ssh(hosts, "edge", Host(address="h2"))
    assert edge.resolved_address == netns_hosts["h2"].address
    assert edge.run(["true"]).returncode == 0


def test_one_connection_is_reused(hosts) -> None:
    h1 = ssh(hosts, "h1")
    h1.connect()
    h1.connect()  # idempotent
    first = h1.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout
    second = h1.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout
    assert first == second  # same client port: same TCP connection


def test_explicit_host_fields_override_config(hosts, netns_hosts, ssh_home) -> None:
    h1 = ssh(
        hosts,
        "x",
        Host(
            address=netns_hosts["h1"].address, user="root", identity_file=str(ssh_home.key), port=22
        ),
    )
    assert h1.run(["id", "-un"]).stdout.strip() == "root"


def test_run_output_and_exit_code(hosts) -> None:
    result = ssh(hosts, "h1").run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_run_quotes_arguments(hosts) -> None:
    weird = "a b 'c' \"d\" $HOME; `x`"
    assert ssh(hosts, "h1").run(["printf", "%s", weird]).stdout == weird


def test_run_feeds_stdin(hosts) -> None:
    h1 = ssh(hosts, "h1")
    assert h1.run(["cat"], stdin=b"hello\nworld\n").stdout == "hello\nworld\n"
    big = os.urandom(3 * 1024 * 1024)  # bigger than the SSH window
    result = h1.run(["sh", "-c", "wc -c; cat /dev/null"], stdin=big)
    assert result.stdout.strip() == str(len(big))


def test_run_sets_env(hosts) -> None:
    result = ssh(hosts, "h1").run(
        ["sh", "-c", 'printf %s "$FOO|$BAR"'], env={"FOO": "a b 'c'", "BAR": "$HOME"}
    )
    assert result.stdout == "a b 'c'|$HOME"


def test_run_times_out_naming_host(hosts) -> None:
    with pytest.raises(LaunchError, match="h1"):
        ssh(hosts, "h1").run(["sleep", "30"], timeout=0.5)


def test_remote_python_imports_clusterduck(hosts) -> None:
    # Namespaces share the filesystem: the remote interpreter is this one.
    result = ssh(hosts, "h1").run(
        [sys.executable, "-c", "import clusterduck, sys; print(sys.version_info[0])"],
        env={"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


# -- host keys ---------------------------------------------------------------------------


def test_unknown_host_key_is_refused(hosts, ssh_home, netns_hosts) -> None:
    ssh_home.known_hosts.write_text("")
    with pytest.raises(HostKeyRefused) as caught:
        ssh(hosts, "h1").connect()
    message = str(caught.value)
    assert "'h1'" in message
    assert "--accept-new-host-keys" in message
    assert "ssh-ed25519 SHA256:" in message
    assert "ssh-keyscan" in message
    assert ssh_home.known_hosts.read_text() == ""


def test_accept_new_host_keys_records_them(hosts, ssh_home, netns_hosts) -> None:
    ssh_home.known_hosts.write_text("# keep me\n")
    h1 = ssh(hosts, "h1", accept_new_host_keys=True)
    assert h1.run(["true"]).returncode == 0
    text = ssh_home.known_hosts.read_text()
    assert text.startswith("# keep me\n")
    assert netns_hosts["h1"].host_key_line in text
    # Recorded, so the next connection passes without the flag.
    assert ssh(hosts, "h1").run(["true"]).returncode == 0


def test_accept_creates_ssh_dir(hosts, tmp_path) -> None:
    known = tmp_path / "fresh" / ".ssh" / "known_hosts"
    h1 = ssh(hosts, "h1", accept_new_host_keys=True, known_hosts_path=str(known))
    h1.connect()
    assert known.is_file()
    assert (known.parent.stat().st_mode & 0o777) == 0o700


def test_changed_host_key_is_always_refused(hosts, ssh_home, netns_hosts) -> None:
    h1 = netns_hosts["h1"]
    kind, blob = netns_hosts.wrong_key.with_suffix(".pub").read_text().split()[:2]
    ssh_home.known_hosts.write_text(f"{h1.address} {kind} {blob}\n")
    for accept in (False, True):
        with pytest.raises(HostKeyRefused, match="CHANGED") as caught:
            ssh(hosts, "h1", accept_new_host_keys=accept).connect()
        assert "'h1'" in str(caught.value)
        assert "ssh-keygen -R" in str(caught.value)


# -- failures ----------------------------------------------------------------------------


def test_stopped_sshd_is_unreachable(hosts, netns_hosts) -> None:
    h3 = netns_hosts["h3"]
    h3.stop_sshd()
    with pytest.raises(HostUnreachable) as caught:
        ssh(hosts, "h3").connect()
    assert "'h3'" in str(caught.value)
    assert f"{h3.address}:22" in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_link_down_makes_connect_fail(hosts, netns_hosts) -> None:
    h2 = netns_hosts["h2"]
    h2.link_down()
    with pytest.raises(HostUnreachable, match="'h2'"):
        ssh(hosts, "h2", connect_timeout=1.5).connect()
    h2.link_up()
    wait_until(lambda: _connects(hosts), what="h2 reachable again after link_up")


def _connects(hosts: list[SSHHost]) -> bool:
    try:
        ssh(hosts, "h2", connect_timeout=1.0).connect()
    except HostUnreachable:
        return False
    return True


def test_wrong_key_is_authentication_failure(hosts, netns_hosts) -> None:
    wrong = str(netns_hosts.wrong_key)
    with pytest.raises(AuthenticationFailed) as caught:
        ssh(hosts, "h1", Host(identity_file=wrong)).connect()
    message = str(caught.value)
    assert f"root@{netns_hosts['h1'].address}" in message
    assert wrong in message
    assert "authorized_keys" in message


def test_missing_identity_file_is_authentication_failure(hosts, tmp_path) -> None:
    with pytest.raises(AuthenticationFailed, match="missing identity files"):
        ssh(hosts, "h1", Host(identity_file=str(tmp_path / "nope"))).connect()


def test_hosts_reach_each_other(netns_hosts) -> None:
    # What a topology needs: a process on h1 connects to one on h2 across the bridge.
    h1, h2 = netns_hosts["h1"], netns_hosts["h2"]
    probe = f"import socket; socket.create_connection(('{h2.address}', 22), timeout=3).close()"
    result = h1.exec([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr


# -- files -------------------------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_ship_sends_only_changes(hosts, netns_hosts, tmp_path) -> None:
    code = tmp_path / "code"
    for rel, text in {
        "main.py": "print(1)\n",
        "pkg/__init__.py": "",
        "pkg/mod.py": "X = 1\n",
        "data/in.txt": "a\n",
        ".git/HEAD": "ref\n",
        "__pycache__/main.pyc": "x",
        ".venv/bin/python": "x",
        "pkg/__pycache__/mod.cpython-311.pyc": "x",
        "junk.pyc": "x",
    }.items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text(text)
    (code / "empty").mkdir()
    (code / "run.sh").write_text("#!/bin/sh\n")
    (code / "run.sh").chmod(0o755)
    target = netns_hosts["h1"].workdir / f"code-{uuid.uuid4().hex[:6]}"
    h1 = ssh(hosts, "h1")

    first = h1.ship(code, str(target))
    assert sorted(first.sent) == [
        "data/in.txt",
        "main.py",
        "pkg/__init__.py",
        "pkg/mod.py",
        "run.sh",
    ]
    assert _tree(target) == set(first.sent)
    assert (target / "empty").is_dir()
    assert os.access(target / "run.sh", os.X_OK)
    assert (target / "pkg/mod.py").read_text() == "X = 1\n"

    second = h1.ship(code, str(target))
    assert second.sent == [] and second.unchanged == 5 and second.removed == []

    (code / "pkg/mod.py").write_text("X = 22\n")
    os.utime(code / "pkg/mod.py", (time.time() + 5, time.time() + 5))
    (code / "data/in.txt").unlink()
    (code / "data").rmdir()
    (target / "__pycache__").mkdir()  # made remotely by running the code: left alone
    (target / "__pycache__" / "main.cpython-311.pyc").write_text("x")
    third = h1.ship(code, str(target))
    assert third.sent == ["pkg/mod.py"]
    assert third.removed == ["data/in.txt"]
    assert not (target / "data").exists()
    assert (target / "pkg/mod.py").read_text() == "X = 22\n"
    assert (target / "__pycache__" / "main.cpython-311.pyc").exists()


def test_ship_expands_tilde_remotely(hosts, tmp_path) -> None:
    h1 = ssh(hosts, "h1")
    home = h1.run(["sh", "-c", 'printf %s "$HOME"']).stdout  # root's real home
    name = f".cdt-ship-test-{uuid.uuid4().hex[:8]}"
    code = tmp_path / "code"
    code.mkdir()
    (code / "f.txt").write_text("hi\n")
    try:
        report = h1.ship(code, f"~/{name}")
        assert report.sent == ["f.txt"]
        assert h1.read_file(f"~/{name}/f.txt") == b"hi\n"
        assert Path(home, name, "f.txt").is_file()  # shared filesystem: check directly
    finally:
        h1.run(["rm", "-rf", f"{home}/{name}"])


def test_read_file(hosts, netns_hosts) -> None:
    path = netns_hosts["h1"].workdir / "state.json"
    path.write_bytes(b'{"a": 1}\n')
    h1 = ssh(hosts, "h1")
    assert h1.read_file(str(path)) == b'{"a": 1}\n'
    assert h1.read_file(str(path.with_name("absent"))) is None
    assert h1.read_file(str(path / "under-a-file")) is None


def test_follow_streams_appended_lines(hosts, netns_hosts) -> None:
    log = netns_hosts["h1"].workdir / f"follow-{uuid.uuid4().hex[:8]}.log"
    log.write_text("old\n")
    stream = ssh(hosts, "h1").follow(["tail", "-n", "+1", "-F", str(log)])
    lines = pump(stream)
    assert wait_for(lines, ["old"]) == ["old"]
    with log.open("a") as handle:
        handle.write("one\ntwo\n")
    assert wait_for(lines, ["one", "two"]) == ["one", "two"]
    stream.close()
    wait_until(lambda: lines.get(timeout=5) is None, what="the stream to end")
    # Closing the channel ends the remote tail too, not only our reading of it.
    wait_until(lambda: _no_process_mentions(str(log)), what="remote tail to exit")


def _no_process_mentions(text: str) -> bool:
    return subprocess.run(["pgrep", "-f", text], capture_output=True).returncode == 1


def test_follow_ends_when_command_ends(hosts) -> None:
    stream = ssh(hosts, "h1").follow(["printf", "a\\nb\\nc"])
    lines = pump(stream)
    got = []
    deadline = time.monotonic() + 10
    while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
        got.append(line)
    assert got == ["a", "b", "c"]


def test_close_then_reuse_reconnects(hosts) -> None:
    h1 = ssh(hosts, "h1")
    assert h1.run(["true"]).returncode == 0
    h1.close()
    assert h1.run(["echo", "again"]).stdout == "again\n"

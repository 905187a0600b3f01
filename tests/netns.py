"""Several "machines" on one box: network namespaces, a bridge, and a real sshd in each.

Each host is a network namespace with one veth into a bridge in the root namespace
(10.231.7.1/24; hosts .11, .12, …) and its own sshd with its own host key, so SSH,
host keys, unreachable hosts and cross-host traffic are all real. Namespaces share the
filesystem and this Python, so every host gets its own temp ``workdir`` and the remote
interpreter is ``sys.executable``. Only 10.231.7.0/24 (and a second cluster's subnet,
such as the ten-host test's 10.231.8.0/24) and loopback are touched.

Needs root, ``ip`` and ``sshd``; ``skip_reason()`` says why not when they are missing.
Teardown kills every process in the namespaces and removes namespaces, veths and the
bridge even after a failure; ``Cluster.start()`` first removes what a crashed run left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import pid_alive

__all__ = ["Cluster", "NetnsHost", "SshHome", "make_ssh_home", "skip_reason"]

PREFIX = "cdt-"  # namespace names: cdt-<pid>-h1 …
SUBNET = "10.231.7"
BRIDGE_ADDR = f"{SUBNET}.1"
SSHD = "/usr/sbin/sshd"


def skip_reason() -> str | None:
    """Why the multi-host tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "multi-host SSH tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "multi-host SSH tests need `ip` (apt-get install iproute2)"
    if not os.access(SSHD, os.X_OK):
        return f"multi-host SSH tests need {SSHD} (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "multi-host SSH tests need ssh-keygen (apt-get install openssh-client)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot use network namespaces here: {probe.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _kill_namespace(netns: str) -> None:
    """SIGKILL everything in ``netns`` (sshd, sessions, detached remote processes)."""
    for _ in range(50):
        pids = _ip("netns", "pids", netns, check=False).stdout.split()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.02)  # let the kernel reap before listing again (bounded loop)


def _stale(owner: str) -> bool:
    """A leftover is stale when the pytest process that made it is gone."""
    if not owner.isdigit() or int(owner) == os.getpid():
        return False
    return not pid_alive(int(owner))


def cleanup_leftovers() -> None:
    """Remove namespaces and links of earlier runs whose pytest process is gone."""
    names = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]
    for ns in names:
        if not ns.startswith(PREFIX):
            continue
        owner = ns[len(PREFIX) :].split("-")[0]
        if not _stale(owner):
            if owner != str(os.getpid()):
                raise RuntimeError(
                    f"namespace {ns} belongs to running process {owner}: another multi-host "
                    f"test run is using {SUBNET}.0/24; run one at a time"
                )
            continue
        _kill_namespace(ns)
        _ip("netns", "del", ns, check=False)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = re.fullmatch(r"cdt(\d+)[a-z]?(br|h\d+p?)", name)
        if match and _stale(match.group(1)):
            _ip("link", "del", name, check=False)
    for leftover in Path(tempfile.gettempdir()).glob("cdt-hosts-*-*"):
        if _stale(leftover.name.split("-")[2]):
            shutil.rmtree(leftover, ignore_errors=True)


def _wait_tcp(
    address: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0
) -> None:
    """Poll until something accepts on address:port; fail early if sshd died."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd on {address}:{port} not accepting after {timeout}s: {log.read_text()}"
                ) from None
            time.sleep(0.05)


@dataclass
class NetnsHost:
    """One "machine": a namespace, its address, its sshd and its own workdir."""

    name: str
    netns: str
    address: str
    veth: str  # the end inside the namespace
    veth_peer: str  # the end enslaved to the bridge (the "switch port")
    workdir: Path
    config_dir: Path
    host_key: Path
    port: int = 22
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def host_key_line(self) -> str:
        """This host's known_hosts line."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"{self.address} {kind} {blob}"

    def start_sshd(self) -> None:
        """Start this host's sshd and wait until it accepts connections."""
        if self.sshd is not None and self.sshd.poll() is None:
            return
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privsep dir
        log = self.config_dir / "sshd.log"
        with open(log, "ab") as out:
            self.sshd = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    SSHD,
                    "-D",
                    "-e",
                    "-f",
                    str(self.config_dir / "sshd_config"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        _wait_tcp(self.address, self.port, self.sshd, log)

    def stop_sshd(self) -> None:
        """Stop the listening sshd (new connections are refused; like `systemctl stop`)."""
        if self.sshd is None:
            return
        try:
            os.killpg(self.sshd.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.sshd.wait(timeout=10)
        self.sshd = None

    def link_down(self) -> None:
        """Unplug the host's cable: its switch port goes down."""
        _ip("link", "set", self.veth_peer, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.veth_peer, "up")

    def exec(self, argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's namespace (for tests' own probes)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@dataclass
class Cluster:
    """N namespaced hosts on one bridge, each with a running sshd.

    ``subnet`` and ``label`` (one lowercase letter) let a second cluster exist beside the
    session's three hosts in the same test run: its own bridge, addresses and names.
    """

    count: int = 3
    subnet: str = SUBNET
    label: str = ""
    # Each host's SSH sessions get HOME=<its own empty dir> (sshd's SetEnv) instead of the
    # remote user's real home: a fresh account's home, whose shell reads no rc file. On
    # this machine root's ~/.bashrc runs `pyenv init` (~100 processes, 0.15-0.25 CPU-s
    # and a lock that serialises concurrent sessions) for every SSH command, which a
    # benchmark of clusterduck's own per-host cost must not count (benchmarks/hosts.py).
    own_homes: bool = False
    hosts: list[NetnsHost] = field(default_factory=list)
    root: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"cdt-hosts-{os.getpid()}-"))
    )
    client_key: Path = field(init=False)
    wrong_key: Path = field(init=False)

    def __post_init__(self) -> None:
        if self.label and not re.fullmatch(r"[a-z]", self.label):
            raise ValueError(f"label must be one lowercase letter, got {self.label!r}")
        self.tag = f"{os.getpid()}{self.label}"
        self.bridge = f"cdt{self.tag}br"
        self.client_key = self.root / "id_ed25519"
        self.wrong_key = self.root / "wrong_ed25519"

    def __getitem__(self, name: str) -> NetnsHost:
        return next(h for h in self.hosts if h.name == name)

    def start(self) -> Cluster:
        """Build the network and start every sshd; on any failure, undo everything."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        cleanup_leftovers()
        _keygen(self.client_key, "clusterduck-test")
        _keygen(self.wrong_key, "clusterduck-wrong")
        authorized = self.root / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        _ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            name = f"h{i}"
            netns = f"{PREFIX}{os.getpid()}-{self.label}{name}"
            host_dir = self.root / name
            (host_dir / "etc").mkdir(parents=True)
            (host_dir / "work").mkdir()
            host = NetnsHost(
                name=name,
                netns=netns,
                address=f"{self.subnet}.{10 + i}",
                veth=f"cdt{self.tag}{name}",
                veth_peer=f"cdt{self.tag}{name}p",
                workdir=host_dir / "work",
                config_dir=host_dir / "etc",
                host_key=host_dir / "etc" / "ssh_host_ed25519_key",
            )
            self.hosts.append(host)
            _ip("netns", "add", netns)
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", host.veth_peer)
            _ip("link", "set", host.veth, "netns", netns)
            _ip("link", "set", host.veth_peer, "master", self.bridge)
            _ip("link", "set", host.veth_peer, "up")
            _ip("-n", netns, "addr", "add", f"{host.address}/24", "dev", host.veth)
            _ip("-n", netns, "link", "set", host.veth, "up")
            _keygen(host.host_key, f"{name}-hostkey")
            self._write_sshd_config(host, authorized)
            host.start_sshd()

    def _write_sshd_config(self, host: NetnsHost, authorized: Path) -> None:
        (host.config_dir / "sshd_config").write_text(
            f"ListenAddress {host.address}\n"
            f"Port {host.port}\n"
            f"HostKey {host.host_key}\n"
            f"PidFile {host.config_dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "LogLevel ERROR\n"
            "Subsystem sftp internal-sftp\n"
            + (f"SetEnv HOME={self._own_home(host)}\n" if self.own_homes else "")
        )

    def _own_home(self, host: NetnsHost) -> Path:
        home = host.config_dir.parent / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        return home

    def known_hosts_text(self) -> str:
        return "".join(h.host_key_line + "\n" for h in self.hosts)

    def close(self) -> None:
        """Kill every process in the namespaces, then remove namespaces, veths, bridge."""
        for host in self.hosts:
            try:
                host.stop_sshd()
            except (OSError, subprocess.TimeoutExpired):
                pass
            _kill_namespace(host.netns)
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.veth_peer, check=False)  # usually gone with the netns
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class SshHome:
    """A throwaway $HOME whose ~/.ssh knows the cluster (config, keys, known_hosts)."""

    home: Path
    ssh_dir: Path
    config: Path
    known_hosts: Path
    key: Path


def make_ssh_home(cluster: Cluster, home: Path) -> SshHome:
    """Write ~/.ssh for ``cluster`` under ``home``: aliases h1…hN, the test key, known_hosts."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ssh_dir / "id_ed25519"
    shutil.copy(cluster.client_key, key)
    shutil.copy(cluster.client_key.with_suffix(".pub"), key.with_suffix(".pub"))
    key.chmod(0o600)
    config = ssh_dir / "config"
    config.write_text(
        "".join(
            f"Host {h.name}\n    HostName {h.address}\n    User root\n"
            f"    Port {h.port}\n    IdentityFile {key}\n"
            for h in cluster.hosts
        )
    )
    known_hosts = ssh_dir / "known_hosts"
    known_hosts.write_text(cluster.known_hosts_text())
    return SshHome(home, ssh_dir, config, known_hosts, key)

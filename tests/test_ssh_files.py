"""~/.ssh/config and known_hosts are parsed once per version of the file, not per host
(launch/filecache.py): the same answers as parsing each time, and a changed file is read
again. No sshd needed: what is tested is what a connection would start from."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import paramiko
import pytest

from clusterduck.launch import ssh as ssh_module
from clusterduck.launch.ssh import SSHHost
from clusterduck.topology import Host

HOUR_NS = 3600 * 10**9


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the real parses of each file (the parsers still run)."""
    seen: Counter[str] = Counter()
    config_parse = paramiko.SSHConfig.parse
    hosts_load = paramiko.HostKeys.load

    def parse(self: paramiko.SSHConfig, file_obj: object) -> None:
        seen[str(getattr(file_obj, "name", "?"))] += 1
        config_parse(self, file_obj)  # type: ignore[arg-type]

    def load(self: paramiko.HostKeys, filename: str) -> None:
        seen[str(filename)] += 1
        hosts_load(self, filename)

    monkeypatch.setattr(paramiko.SSHConfig, "parse", parse)
    monkeypatch.setattr(paramiko.HostKeys, "load", load)
    return seen


def age(path: Path, ns: int = HOUR_NS, mtime_ns: int | None = None) -> None:
    """Give the file an mtime in the past (a file edited a while ago)."""
    when = mtime_ns if mtime_ns is not None else path.stat().st_mtime_ns - ns
    os.utime(path, ns=(when, when))


def config_text(address: str) -> str:
    return f"Host edge\n    HostName {address}\n    User duck\n    Port 2222\n"


def target_of(config: Path) -> str:
    host = SSHHost("edge", Host(), ssh_config_path=str(config))
    t = host.target
    return f"{t.user}@{t.hostname}:{t.port}"


def known_hosts_lines(tmp_path: Path) -> tuple[list[str], dict[str, paramiko.PKey]]:
    keys = {name: paramiko.ECDSAKey.generate() for name in ("a", "b", "c", "d")}
    hashed = paramiko.HostKeys.hash_host("hashed.example")
    lines = [
        "# a comment",
        f"a.example,10.0.0.1 {keys['a'].get_name()} {keys['a'].get_base64()}",
        f"[b.example]:2222 {keys['b'].get_name()} {keys['b'].get_base64()}",
        f"{hashed} {keys['c'].get_name()} {keys['c'].get_base64()}",
    ]
    return lines, keys


def test_up_on_twenty_hosts_parses_the_ssh_config_and_known_hosts_once(
    tmp_path: Path, parses: Counter[str]
) -> None:
    config = tmp_path / "config"
    config.write_text(config_text("10.1.0.7"))
    age(config)
    known = tmp_path / "known_hosts"
    lines, _ = known_hosts_lines(tmp_path)
    known.write_text("\n".join(lines) + "\n")
    age(known)
    for _ in range(20):
        host = SSHHost("edge", Host(), ssh_config_path=str(config), known_hosts_path=str(known))
        assert host.target.hostname == "10.1.0.7"
        client = paramiko.SSHClient()
        host._load_host_keys(client)
        assert client.get_host_keys().lookup("10.0.0.1") is not None
    assert parses[str(config)] == 1
    assert parses[str(known)] == 1


def test_a_changed_ssh_config_is_read_again(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(config_text("10.1.0.7"))
    age(config)
    assert target_of(config) == "duck@10.1.0.7:2222"
    config.write_text(config_text("10.1.0.8"))  # same size, another mtime
    # Two hours back, not one: a coarse-clock kernel may stamp both writes alike.
    age(config, ns=2 * HOUR_NS)
    assert target_of(config) == "duck@10.1.0.8:2222"
    config.write_text(config_text("10.1.0.99"))  # another size
    age(config)
    assert target_of(config) == "duck@10.1.0.99:2222"


def test_a_file_rewritten_within_one_clock_tick_is_read_again(tmp_path: Path) -> None:
    """Same size, same inode, same mtime (a coarse filesystem clock): a file parsed
    right after it was written is not trusted from the cache."""
    config = tmp_path / "config"
    config.write_text(config_text("10.1.0.7"))
    stamp = config.stat().st_mtime_ns
    assert target_of(config) == "duck@10.1.0.7:2222"
    config.write_text(config_text("10.1.0.8"))
    age(config, mtime_ns=stamp)
    assert target_of(config) == "duck@10.1.0.8:2222"


def test_a_rewrite_that_puts_the_old_mtime_back_is_read_again(tmp_path: Path) -> None:
    """Same size, same inode, the mtime restored (``cp -p``, ``rsync -t``, ``touch -r``):
    only the ctime tells (before: the old parse was served)."""
    config = tmp_path / "config"
    config.write_text(config_text("10.1.0.7"))
    age(config)
    before = config.stat()
    assert target_of(config) == "duck@10.1.0.7:2222"

    def rewritten() -> bool:
        config.write_text(config_text("10.1.0.8"))  # same size
        age(config, mtime_ns=before.st_mtime_ns)
        return config.stat().st_ctime_ns != before.st_ctime_ns  # a coarse clock: again

    deadline = time.monotonic() + 10
    while not rewritten():
        assert time.monotonic() < deadline, "the ctime never moved"
    assert config.stat().st_mtime_ns == before.st_mtime_ns
    assert config.stat().st_size == before.st_size
    assert target_of(config) == "duck@10.1.0.8:2222"


def test_cached_known_hosts_look_up_like_paramikos_own_load(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    lines, keys = known_hosts_lines(tmp_path)
    known.write_text("\n".join(lines) + "\n")
    age(known)
    host = SSHHost("edge", Host(), known_hosts_path=str(known))
    names = ["a.example", "10.0.0.1", "[b.example]:2222", "b.example", "hashed.example", "z"]

    def cached() -> dict[str, dict[str, str] | None]:
        client = paramiko.SSHClient()
        host._load_host_keys(client)
        return {n: _as_text(client.get_host_keys().lookup(n)) for n in names}

    def reference() -> dict[str, dict[str, str] | None]:
        plain = paramiko.SSHClient()
        plain.load_host_keys(str(known))
        return {n: _as_text(plain.get_host_keys().lookup(n)) for n in names}

    first = cached()
    assert first == reference()
    assert first["hashed.example"] is not None and first["z"] is None
    # A policy adding a key to one client's set leaves the cache (and others) alone.
    client = paramiko.SSHClient()
    host._load_host_keys(client)
    client.get_host_keys().add("z", keys["d"].get_name(), keys["d"])
    assert cached()["z"] is None
    # A key appended to the file (what --accept-new-host-keys does) is read again.
    with known.open("a") as handle:
        handle.write(f"z {keys['d'].get_name()} {keys['d'].get_base64()}\n")
    age(known)
    assert cached() == reference()
    assert cached()["z"] is not None


def _as_text(found: object) -> dict[str, str] | None:
    if found is None:
        return None
    assert isinstance(found, dict) or hasattr(found, "keys")
    return {kind: found[kind].get_base64() for kind in found.keys()}  # type: ignore[index, attr-defined]


def test_the_cache_is_keyed_by_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text(config_text("10.1.0.1"))
    two.write_text(config_text("10.1.0.2"))
    age(one)
    age(two)
    assert target_of(one) == "duck@10.1.0.1:2222"
    assert target_of(two) == "duck@10.1.0.2:2222"
    assert ssh_module._SSH_CONFIGS.get(str(one)) is ssh_module._SSH_CONFIGS.get(str(one))

"""Pytest plugin: the multi-host fixtures (``netns_cluster``, ``ssh_home``).

Register it from tests/conftest.py with ``pytest_plugins = ["tests.conftest_ssh"]`` (needs
``pythonpath = ["."]`` in the pytest config, or tests/__init__.py).
Tests using these fixtures are skipped with the reason when not root or when ``ip`` /
``sshd`` are missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from tests.netns import Cluster, SshHome, make_ssh_home, skip_reason
except ModuleNotFoundError:  # tests/ itself is on sys.path (rootdir conftest, no package)
    from netns import Cluster, SshHome, make_ssh_home, skip_reason  # type: ignore[no-redef]


@pytest.fixture(scope="session")
def netns_cluster() -> Iterator[Cluster]:
    """Three hosts h1..h3 (10.231.7.11-13), each with its own sshd, for the whole session."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(count=3).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def netns_hosts(netns_cluster: Cluster) -> Iterator[Cluster]:
    """The session cluster, with every sshd running and every link up again afterwards."""
    for host in netns_cluster.hosts:
        host.link_up()
        host.start_sshd()
    yield netns_cluster
    for host in netns_cluster.hosts:
        host.link_up()
        host.start_sshd()


@pytest.fixture
def ssh_home(netns_hosts: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SshHome:
    """HOME=<tmp> with ~/.ssh/{config,known_hosts,id_ed25519} for h1..h3; no ssh-agent."""
    home = make_ssh_home(netns_hosts, tmp_path / "home")
    monkeypatch.setenv("HOME", str(home.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # the agent must not rescue auth tests
    return home

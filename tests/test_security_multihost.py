"""Issue 10 across hosts (network namespaces): CURVE keeps out a plain ZeroMQ peer and a
peer holding another topology's keys, on the data and on the control sockets.

Run under the netns lock: ``flock /tmp/clusterduck-netns.lock python -m pytest -m ssh``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from clusterduck.runtime.transport import generate_curve_keys
from tests.netns import Cluster
from tests.test_multihost import CLI, cli, wait_until, write_stream  # noqa: F401 - fixture

pytestmark = pytest.mark.ssh

ROGUE = Path(__file__).resolve().parent / "rogue_peer.py"


def rogue(
    cluster: Cluster, host: str, data: str, control: str, marker: Path, keys: dict[str, str] | None
) -> dict[str, Any]:
    """The rogue peer, run in ``host``'s namespace (another machine)."""
    env = ["env", f"ROGUE_CURVE={json.dumps(keys) if keys else ''}"]
    out = cluster[host].exec(
        [*env, sys.executable, str(ROGUE), data, control, str(marker)], timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plain_and_foreign_key_peers_on_another_host_are_refused(
    cli: CLI,  # noqa: F811 - the imported fixture
    netns_hosts: Cluster,
    tmp_path: Path,
) -> None:
    path = write_stream(tmp_path, netns_hosts)
    result = cli("up", str(path))
    assert result.returncode == 0, result.stderr
    status = wait_until(
        lambda: (
            (s := cli.status("stream3"))["components"][-1]["instances"][0]["received"] > 0 and s
        ),
        what="messages reaching the sink",
    )
    dbl = next(c for c in status["components"] if c["name"] == "dbl")["instances"][0]
    assert dbl["host"] == "h2" and dbl["endpoint"].startswith("tcp://")
    state = json.loads(
        (Path(cli.env["CLUSTERDUCK_HOME"]) / "topologies" / "stream3" / "state.json").read_text()
    )
    control = state["hosts"]["h2"]["control"]
    own = json.loads(
        (Path(cli.env["CLUSTERDUCK_HOME"]) / "topologies" / "stream3" / "keys.json").read_text()
    )
    other = generate_curve_keys()  # another topology's keys
    marker = tmp_path / "pwned"

    plain = rogue(netns_hosts, "h3", dbl["endpoint"], control, marker, None)
    foreign = rogue(
        netns_hosts,
        "h3",
        dbl["endpoint"],
        control,
        marker,
        {
            "server": own["public"],
            "data_server": own["members"]["dbl/0"],  # dbl/0's inbox has its own key
            "public": other.public,
            "secret": other.secret,
        },
    )
    # The check can fail: with the topology's own keys the control socket answers.
    member = rogue(
        netns_hosts, "h3", "tcp://127.0.0.1:9", control, marker, {"server": own["public"], **own}
    )

    assert plain["control_answered"] is False
    assert foreign["control_answered"] is False
    assert member["control_answered"] is True
    after = cli.status("stream3")
    dbl_after = next(c for c in after["components"] if c["name"] == "dbl")["instances"][0]
    assert not marker.exists()
    assert dbl_after["rejected_frames"] == {}  # nothing was even read: refused at handshake
    assert dbl_after["restarts"] == 0 and dbl_after["state"] == "running"
    # Only the member reached the supervisor: its two non-JSON frames were counted.
    assert after["rejected_frames"] == {"control_undecodable": 2}
    runs = Path(os.fspath(netns_hosts["h2"].workdir)) / "runs" / "stream3"
    logs = "".join(p.read_text() for p in runs.glob("*/supervisor.log"))
    assert "refused a connection from a peer without the topology's keys" in logs
    assert cli("down", "stream3").returncode == 0

"""The dashboard of a topology on three SSH hosts (network namespaces with real sshd):
the API and /metrics read remote status through the same path as ``status``, and a host
whose link is cut reads ``unreachable`` instead of hanging the answer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.netns import Cluster
from tests.test_dashboard import Dashboard
from tests.test_multihost import CLI, cli, wait_until, write_stream  # noqa: F401  (fixture)

pytestmark = pytest.mark.ssh
pytest.importorskip("prometheus_client")


def test_remote_topology_in_api_and_metrics_and_a_cut_link(
    cli: CLI,  # noqa: F811
    netns_hosts: Cluster,
    tmp_path: Path,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    path = write_stream(tmp_path, netns_hosts, name="stream3")
    up = cli("up", str(path))
    assert up.returncode == 0, up.stderr
    wait_until(lambda: cli.status("stream3")["state"] == "running", what="running")
    d = Dashboard(SimpleNamespace(env=cli.env, tmp=tmp_path), "stream3")  # type: ignore[arg-type]
    try:
        code, _, body = d.get("/api/topologies/stream3/status")
        assert code == 200
        doc = json.loads(body)
        hosts = {row["host"] for c in doc["components"] for row in c["instances"]}
        assert hosts == {"h1", "h2", "h3"}
        assert doc["hosts"] == {"h1": "running", "h2": "running", "h3": "running"}

        code, _, body = d.get("/metrics")
        received = {
            (s.labels["component"], s.labels["instance"], s.labels["host"])
            for f in text_string_to_metric_families(body)
            for s in f.samples
            if s.name == "clusterduck_received_total" and s.labels["topology"] == "stream3"
        }
        assert received == {
            ("src", "0", "h1"),
            ("dbl", "0", "h2"),
            ("dbl", "1", "h3"),
            ("out", "0", "h1"),
        }

        netns_hosts["h3"].link_down()

        answers: list[tuple[int, str]] = []

        def unreachable() -> Any:
            code, _, body = d.get("/api/topologies/stream3/status")
            doc = json.loads(body)
            answers.append((code, body[:300]))
            if code != 200:
                return False
            rows = [r for c in doc["components"] for r in c["instances"] if r["host"] == "h3"]
            return code == 200 and rows and all(r["state"] == "unreachable" for r in rows)

        wait_until(unreachable, timeout=90, what=f"h3 unreachable in the API: {answers}")
        code, _, body = d.get("/metrics")
        assert code == 200
        states = {
            s.labels["instance"]: s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
            if s.name == "clusterduck_state"
            and s.labels["component"] == "dbl"
            and s.labels["state"] == "unreachable"
        }
        assert states == {"0": 0.0, "1": 1.0}
    finally:
        d.close()
        netns_hosts["h3"].link_up()

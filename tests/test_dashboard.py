"""``clusterduck dashboard`` (issue 13), end to end: real topologies started by the real
CLI with a private ``$CLUSTERDUCK_HOME``, the dashboard as a subprocess on a random
loopback port, the pages in a real headless chromium (playwright driving Debian's
``/usr/bin/chromium``), ``/metrics`` read with prometheus-client's own parser.

The browser test saves its screenshot as ``tests/artifacts/dashboard.png`` (the README's
``docs/dashboard.png`` is a copy of one).
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from lifecycle_fixtures import CLI, Clusterduck, instance, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


class Dashboard:
    """``clusterduck dashboard --port 0`` in a subprocess; ``url`` from what it prints."""

    def __init__(self, duck: Clusterduck, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "dashboard", "--port", "0", *args],
            env=duck.env,
            cwd=duck.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(
            target=lambda: lines.put(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        ).start()
        try:
            self.banner = lines.get(timeout=60)
        except queue.Empty:
            self.close()
            raise AssertionError("the dashboard printed no URL within 60s") from None
        assert self.banner.startswith("dashboard: http://"), self.banner
        self.url = self.banner.split()[1]
        self.root = self.url.split("/", 3)[:3]
        self.base = "/".join(self.root)

    def get(self, path: str) -> tuple[int, str, str]:
        """(status code, content type, body) of a GET."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def close(self) -> str:
        """Stop it (Ctrl-C) and return what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@pytest.fixture
def dashboard(duck: Clusterduck) -> Iterator[list[Dashboard]]:
    started: list[Dashboard] = []
    try:
        yield started
    finally:
        for d in started:
            d.close()


def serve(duck: Clusterduck, started: list[Dashboard], *args: str) -> Dashboard:
    d = Dashboard(duck, *args)
    started.append(d)
    return d


@pytest.fixture
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def cell(page: Any, inst: str, field: str) -> str:
    text: str = page.locator(
        f'#instances tr[data-instance="{inst}"] td[data-field="{field}"]'
    ).inner_text()
    return text


def count(text: str) -> int:
    return int(text.replace(",", "") or 0)


def finished_topology(duck: Clusterduck, label: str) -> str:
    name = duck.name(label)
    done = duck.up("finite", name, "--wait")
    assert done.returncode == 0, done.stderr
    assert duck.status(name)["state"] == "finished"
    return name


# -- the page in a browser ------------------------------------------------------------------


def test_live_page_draws_the_graph_and_counts_grow_without_reload(
    duck: Clusterduck, dashboard: list[Dashboard], browser: Any
) -> None:
    name = duck.name("dash")
    started = duck.up("dashboard", name)
    assert started.returncode == 0, started.stderr
    status = duck.status(name)
    components = [c["name"] for c in status["components"]]
    assert components == ["source", "relay", "check", "join", "sink"]

    d = serve(duck, dashboard, name)
    assert d.url == f"{d.base}/topologies/{name}", d.banner
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.goto(d.url)

    # every component in the drawn graph (SVG) and in the instance table
    page.wait_for_selector('#instances tr[data-instance="sink/0"]', timeout=30_000)
    page.wait_for_selector('#graph g.node[data-component="sink"]', timeout=30_000)
    drawn = page.locator("#graph g.node text.title").all_text_contents()
    assert sorted(drawn) == sorted(components)
    for comp in status["components"]:
        assert page.locator(f'#graph g.node[data-component="{comp["name"]}"]').count() == 1
        for row in comp["instances"]:
            inst = f"{comp['name']}/{row['index']}"
            assert cell(page, inst, "component") == comp["name"]
            assert cell(page, inst, "host") == "localhost"
    assert page.locator("#graph g.edge").count() == 5  # source→relay, →check, both→join, →sink
    assert (
        "bundle · sequential" in page.locator('#graph g.node[data-component="join"]').text_content()
    )

    # a counter read twice grows, and the page never navigated again
    first = count(cell(page, "sink/0", "received"))
    wait_until(
        lambda: count(cell(page, "sink/0", "received")) > first,
        timeout=30,
        what="sink/0's received count to grow on the page",
    )
    assert navigations == [d.url]
    assert page.locator("#state").inner_text() == "running"

    # edges carry live rates; errors from `check` show with their seq ids
    wait_until(
        lambda: (
            page.locator('#graph g.edge[data-edge="source->relay"] text').text_content()
            not in ("–", "0/s")
        ),
        timeout=30,
        what="a live edge rate",
    )
    wait_until(
        lambda: page.locator("#events tbody tr").count() > 0,
        timeout=60,
        what="an error or anomaly in the events table",
    )
    seqs = page.locator("#events tbody td.num").all_inner_texts()
    assert any(s.isdigit() for s in seqs), seqs
    wait_until(
        lambda: len(page.locator("#charts polyline").first.get_attribute("points") or "") > 0,
        timeout=30,
        what="a rate chart",
    )

    # the chosen instance's log: what `logs NAME relay` shows
    page.select_option("#log-instance", "relay/0")
    wait_until(
        lambda: "relay saw" in page.locator("#log").inner_text(),
        timeout=30,
        what="relay/0's log lines on the page",
    )
    # let the rate history fill a little so the screenshot shows lines, not dots
    wait_until(
        lambda: (
            len((page.locator("#charts polyline").first.get_attribute("points") or "").split())
            >= 12
        ),
        timeout=60,
        what="12 rate samples",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True, timeout=120_000)
    assert not errors, errors


def test_page_shows_a_finished_topology_finished(
    duck: Clusterduck, dashboard: list[Dashboard], browser: Any
) -> None:
    name = finished_topology(duck, "dashfin")
    d = serve(duck, dashboard)
    page = browser.new_page()
    page.goto(d.base + "/")
    row = page.locator(f'#topologies tr[data-topology="{name}"]')
    row.wait_for(timeout=30_000)
    assert "finished" in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(f"{d.base}/topologies/{name}")
    wait_until(
        lambda: page.locator("#state").inner_text() == "finished",
        timeout=30,
        what="the badge to read finished",
    )
    for inst in ("numbers/0", "double/0", "printer/0"):
        assert cell(page, inst, "state") == "finished"
    assert count(cell(page, "printer/0", "received")) == 20


def test_page_shows_the_restart_of_a_killed_instance(
    duck: Clusterduck, dashboard: list[Dashboard], browser: Any
) -> None:
    name = duck.name("dashkill")
    started = duck.up("endless", name, env={"LC_DELAY": "0.01"})
    assert started.returncode == 0, started.stderr
    d = serve(duck, dashboard, name)
    page = browser.new_page()
    page.goto(d.url)
    page.wait_for_selector('#instances tr[data-instance="relay/0"]', timeout=30_000)
    wait_until(
        lambda: cell(page, "relay/0", "state") == "running",
        timeout=30,
        what="relay/0 running on the page",
    )
    assert cell(page, "relay/0", "restarts") == "0"

    pid = instance(duck.status(name), "relay", 0)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: cell(page, "relay/0", "restarts") == "1",
        timeout=60,
        what="relay/0's restart on the page",
    )
    wait_until(
        lambda: cell(page, "relay/0", "pid") not in ("-", str(pid)),
        timeout=60,
        what="a new pid for relay/0",
    )
    assert "restart" in page.locator('#graph g.node[data-component="relay"]').text_content()


# -- the API and /metrics ----------------------------------------------------------------


def test_api_returns_the_documented_status_and_404_for_unknown(
    duck: Clusterduck, dashboard: list[Dashboard]
) -> None:
    name = finished_topology(duck, "dashapi")
    d = serve(duck, dashboard)

    code, ctype, body = d.get("/api/topologies")
    assert (code, ctype) == (200, "application/json")
    listed = json.loads(body)
    assert [(t["name"], t["state"], t["hosts"]) for t in listed] == [
        (name, "finished", ["localhost"])
    ]

    code, ctype, body = d.get(f"/api/topologies/{name}/status")
    assert (code, ctype) == (200, "application/json")
    doc = json.loads(body)
    assert doc == duck.status(name)
    assert {"name", "state", "components"} <= set(doc)
    for comp in doc["components"]:
        assert {"name", "kind", "instances"} <= set(comp)
        for row in comp["instances"]:
            assert {
                "index",
                "host",
                "pid",
                "state",
                "endpoint",
                "received",
                "emitted",
                "errors",
                "anomalies",
                "backlog",
                "rate",
                "restarts",
                "uptime",
                "last_error",
            } <= set(row)

    for path in (
        "/api/topologies/nosuch/status",
        "/api/topologies/nosuch/events",
        "/api/topologies/nosuch/graph",
    ):
        code, ctype, body = d.get(path)
        assert (code, ctype) == (404, "application/json"), path
        error = json.loads(body)
        assert "nosuch" in error["error"] and error["known"] == [name]
    code, _, _ = d.get("/topologies/nosuch")
    assert code == 404
    code, ctype, body = d.get(f"/api/topologies/{name}/logs?instance=printer/9")
    assert code == 404 and "printer/9" in json.loads(body)["error"]
    code, _, body = d.get(f"/api/topologies/{name}/logs?instance=printer/0&lines=5")
    assert code == 200 and "printer done: count=20" in "\n".join(json.loads(body)["lines"])


def test_metrics_equal_status_json(duck: Clusterduck, dashboard: list[Dashboard]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    name = finished_topology(duck, "dashprom")
    status = duck.status(name)
    d = serve(duck, dashboard)
    code, ctype, body = d.get("/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for family, kind in [
        ("clusterduck_received", "counter"),
        ("clusterduck_emitted", "counter"),
        ("clusterduck_errors", "counter"),
        ("clusterduck_restarts", "counter"),
        ("clusterduck_anomalies", "counter"),
        ("clusterduck_backlog", "gauge"),
        ("clusterduck_rate", "gauge"),
        ("clusterduck_state", "gauge"),
    ]:
        assert families[family].type == kind, family

    def value(family: str, suffix: str = "", **labels: str) -> float:
        found = [
            s.value
            for s in families[family].samples
            if s.name == family + suffix and s.labels == labels
        ]
        assert len(found) == 1, (family, labels, found)
        return found[0]

    for comp in status["components"]:
        for row in comp["instances"]:
            labels = {
                "topology": name,
                "component": comp["name"],
                "instance": str(row["index"]),
                "host": row["host"],
            }
            for key in ("received", "emitted", "errors", "restarts"):
                assert value(f"clusterduck_{key}", "_total", **labels) == row[key], key
            assert value("clusterduck_backlog", **labels) == row["backlog"]
            assert math.isclose(value("clusterduck_rate", **labels), row["rate"])
            assert value("clusterduck_state", **labels, state=row["state"]) == 1
            assert value("clusterduck_state", **labels, state="running") == 0
            for kind, n in (row["anomalies"] or {}).items():
                assert value("clusterduck_anomalies", "_total", **labels, kind=kind) == n
            for kind, n in (row["rejected_frames"] or {}).items():
                assert value("clusterduck_rejected_frames", "_total", **labels, kind=kind) == n
    assert value("clusterduck_topology_state", topology=name, state="finished") == 1
    assert status["components"][2]["instances"][0]["received"] == 20  # not all zeros


def test_metrics_count_anomalies_by_kind(duck: Clusterduck, dashboard: list[Dashboard]) -> None:
    """A running topology whose join skips gaps: anomalies by kind match status."""
    from prometheus_client.parser import text_string_to_metric_families

    name = duck.name("dashanom")
    assert duck.up("dashboard", name).returncode == 0
    wait_until(
        lambda: instance(duck.status(name), "join")["anomalies"].get("gap_skipped"),
        timeout=60,
        what="a gap_skipped anomaly in join",
    )
    # A frame that is not ours, sent to join's inbox by a peer with access (this user):
    # dropped, counted, and exported.
    endpoint = instance(duck.status(name), "join")["endpoint"]
    ctx = zmq.Context()
    try:
        rogue = ctx.socket(zmq.DEALER)
        rogue.connect(endpoint)
        rogue.send_multipart([b"not a clusterduck frame"])
        wait_until(
            lambda: instance(duck.status(name), "join")["rejected_frames"].get("header"),
            timeout=60,
            what="join to count the rogue frame",
        )
        rogue.close(linger=0)
    finally:
        ctx.term()
    d = serve(duck, dashboard)
    code, _, body = d.get("/metrics")
    samples = [s for f in text_string_to_metric_families(body) for s in f.samples]
    gap = [
        s
        for s in samples
        if s.name == "clusterduck_anomalies_total"
        and s.labels["component"] == "join"
        and s.labels["kind"] == "gap_skipped"
    ]
    assert len(gap) == 1 and gap[0].labels["topology"] == name and gap[0].value >= 1
    rejected = [
        (s.labels["component"], s.labels["kind"], s.value)
        for s in samples
        if s.name == "clusterduck_rejected_frames_total" and s.labels["topology"] == name
    ]
    assert rejected == [("join", "header", 1.0)]


# -- bad input -------------------------------------------------------------------------


def test_unknown_topology_exits_1_naming_the_known_ones(duck: Clusterduck) -> None:
    name = finished_topology(duck, "dashbad")
    result = duck.run("dashboard", "nosuch", "--port", "0", timeout=60)
    assert result.returncode == 1
    assert "nosuch" in result.stderr and name in result.stderr
    assert "dashboard: http" not in result.stdout


def test_port_in_use_exits_1_naming_the_port(duck: Clusterduck) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = duck.run("dashboard", "--port", str(port), timeout=60)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_listening_beyond_loopback_warns(duck: Clusterduck, dashboard: list[Dashboard]) -> None:
    d = serve(duck, dashboard, "--host", "0.0.0.0")
    port = d.url.split(":")[2].split("/")[0]
    d.base = f"http://127.0.0.1:{port}"
    code, _, body = d.get("/api/topologies")
    assert (code, json.loads(body)) == (200, [])
    assert "warning" in d.close() and "0.0.0.0" in d.banner


def test_read_only(duck: Clusterduck, dashboard: list[Dashboard]) -> None:
    name = finished_topology(duck, "dashro")
    d = serve(duck, dashboard)
    request = urllib.request.Request(f"{d.base}/api/topologies/{name}/status", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 405


def test_without_the_extra_the_command_names_the_install(duck: Clusterduck) -> None:
    # starlette made unimportable, as in an install without the `dashboard` extra
    code = (
        "import sys; sys.modules['starlette'] = None; "
        "from clusterduck.cli import main; main(['dashboard', '--port', '0'])"
    )
    result = subprocess.run(
        [CLI[0], "-c", code],
        env=duck.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=duck.tmp,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "pip install 'clusterduck[dashboard]'" in result.stderr
    assert "starlette" in result.stderr


def test_a_host_that_stops_answering_shows_unreachable(
    duck: Clusterduck, dashboard: list[Dashboard], browser: Any
) -> None:
    """The supervisor frozen (SIGSTOP): its control requests time out. The page and the
    API must say unreachable instead of hanging."""
    name = duck.name("dashfrozen")
    assert duck.up("endless", name, env={"LC_DELAY": "0.01"}).returncode == 0
    d = serve(duck, dashboard, name)
    page = browser.new_page()
    page.goto(d.url)
    wait_until(
        lambda: page.locator("#state").inner_text() == "running",
        timeout=30,
        what="the page to show running",
    )
    supervisor = duck.supervisor_pid(name)
    os.kill(supervisor, signal.SIGSTOP)
    try:
        wait_until(
            lambda: cell(page, "sink/0", "state") == "unreachable",
            timeout=60,
            what="sink/0 unreachable on the page",
        )
        assert page.locator("#state").inner_text() == "broken"
        assert "supervisor does not answer" in page.locator("#problems").inner_text()
        code, _, body = d.get(f"/api/topologies/{name}/status")
        assert code == 200 and json.loads(body)["state"] == "broken"
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_until(
        lambda: cell(page, "sink/0", "state") == "running",
        timeout=60,
        what="sink/0 running again once the supervisor answers",
    )

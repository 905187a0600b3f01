"""Where the dashboard gets its facts: the only module of the package that touches the
deploy engine and the state folder.

Every function answers in the *documented* shapes (``status --json``, ``list``, ``logs``)
and goes through the same code path as the matching command, so that a topology on
remote hosts reads the same way here as in a terminal. When the engine grows a typed
status API, this module is the one place to re-point.

These calls block (ZeroMQ requests, SSH): callers run them off the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import deploy
from ..exceptions import ClusterduckError, StateError
from ..logview import LOOK_BACK, last_records, lines_of
from ..protocol import RunLayout
from ..state import TopologyRecord, find, load_all

__all__ = [
    "LogEvent",
    "UnknownTopology",
    "describe",
    "known_topologies",
    "log_tail",
    "recent_events",
    "topology_names",
    "topology_status",
]


class UnknownTopology(StateError):
    """A name no topology on this machine has; carries the names it knows."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"no topology named {name!r} is known here "
            f"(known: {', '.join(known) or 'none; start one with `clusterduck up FILE`'})"
        )


def _record(name: str) -> TopologyRecord:
    try:
        return find(name)
    except StateError as exc:
        raise UnknownTopology(name, [r.name for r in load_all()]) from exc


def known_topologies() -> list[dict[str, Any]]:
    """What ``clusterduck list`` shows: every topology recorded here, active ones
    refreshed first (so one that finished since reads ``finished``)."""
    for rec in load_all():
        if rec.active:
            try:
                deploy.topology_status(rec)
            except ClusterduckError:
                pass  # list still shows it; its status page says what is wrong
    return [
        {
            "name": r.name,
            "state": r.status,
            "hosts": list(r.hosts),
            "started": r.started_at,
            "file": r.file,
        }
        for r in load_all()
    ]


def topology_names() -> list[str]:
    """The names of every topology recorded here, without asking any host."""
    return [r.name for r in load_all()]


def topology_status(name: str) -> dict[str, Any]:
    """The documented ``status --json`` of topology ``name`` (raises UnknownTopology)."""
    return deploy.topology_status(_record(name)).to_dict()


def describe(name: str) -> dict[str, Any]:
    """The DAG as the page draws it: per component its kind, inputs, flags,
    parallelism and the host of every instance (what ``graph`` prints)."""
    spec = _record(name).spec
    components = []
    for comp in spec.components:
        components.append(
            {
                "name": comp.name,
                "kind": comp.kind,
                "inputs": list(comp.inputs),
                "bundle": comp.bundle,
                "sequential": comp.sequential,
                "grouping": None if comp.is_spout else comp.grouping,
                "parallelism": comp.parallelism,
                "hosts": [comp.host_of(i) for i in range(comp.parallelism)],
            }
        )
    return {"name": spec.name, "components": components}


def _log_path(record: TopologyRecord, component: str, index: int, host: str) -> str:
    # The layout `logs` reads: this run's folder on the instance's host.
    return RunLayout(record.hosts[host].run_dir).instance_log(component, index)


def _instances(record: TopologyRecord) -> list[tuple[str, int, str]]:
    """(component, index, record key of the supervisor that runs it): on a Slurm
    group's other nodes that is ``<group>#<rank>``, whose run folder holds the log."""
    return [
        (c.name, i, record.holder(c.name, i))
        for c in record.spec.components
        for i in range(c.parallelism)
    ]


def log_tail(name: str, component: str, index: int, lines: int) -> str:
    """The last ``lines`` lines of one instance's log, as ``logs NAME COMPONENT -n``
    shows them (``tail`` on its host; from the start of a record, never among a
    traceback's frames: logview)."""
    record = _record(name)
    hosts = {(c, i): h for c, i, h in _instances(record)}
    if (component, index) not in hosts:
        known = ", ".join(f"{c}/{i}" for c, i in hosts)
        raise StateError(
            f"topology {name} has no instance {component}/{index} (instances: {known})"
        )
    host = hosts[(component, index)]
    cluster = deploy.Cluster(record)
    path = _log_path(record, component, index, host)
    try:
        end = cluster.conn(host).run(["tail", "-n", str(lines + LOOK_BACK), path], timeout=10)
    finally:
        cluster.close()
    return "".join(last_records(lines_of(end.stdout, True), lines))


@dataclass(frozen=True)
class LogEvent:
    """One error or anomaly line of a process log (docs/reference.md §1)."""

    time: str
    level: str
    instance: str
    seq: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "level": self.level,
            "instance": self.instance,
            "seq": self.seq,
            "message": self.message,
        }


# runtime/process.py's format: "%(asctime)s %(levelname)s [component/i] %(message)s"
_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[,.]\d+ (?P<level>WARNING|ERROR|CRITICAL) "
    r"\[(?P<instance>[^\]]+)\] (?P<message>.*)$"
)
_SEQ = re.compile(r"\bseq (\d+)")


def parse_events(text: str) -> list[LogEvent]:
    """The warning and error lines of a log (traceback bodies skipped)."""
    found: list[tuple[re.Match[str], list[str]]] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            found.append((m, []))
        elif found and line.strip() and not line[:4].isdigit():
            found[-1][1].append(line.strip())  # a traceback under the last entry
    events = []
    for m, body in found:
        message = m["message"]
        if message.endswith(":") and body:
            message += " " + body[-1]  # the exception itself, the traceback's last line
        seq = _SEQ.search(message)
        events.append(
            LogEvent(
                m["time"], m["level"], m["instance"], int(seq.group(1)) if seq else None, message
            )
        )
    return events


def recent_events(name: str, lines: int = 400, keep: int = 50) -> list[LogEvent]:
    """The latest errors and anomalies over every instance's log tail, oldest first."""
    record = _record(name)
    cluster = deploy.Cluster(record)
    events: list[LogEvent] = []
    try:
        for component, index, host in _instances(record):
            try:
                text = (
                    cluster.conn(host)
                    .run(
                        ["tail", "-n", str(lines), _log_path(record, component, index, host)],
                        timeout=10,
                    )
                    .stdout
                )
            except ClusterduckError:
                continue  # an unreachable host: status says so
            events.extend(parse_events(text))
    finally:
        cluster.close()
    events.sort(key=lambda e: e.time)
    return events[-keep:]

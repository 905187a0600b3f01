"""What ``up`` records under ``$CLUSTERDUCK_HOME`` so that a fresh shell can find,
query and stop a topology: ``topologies/<name>/state.json`` (hosts, supervisor
endpoints and pids, the resolved topology) and ``keys.json`` (CURVE keys, mode 0600).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import StateError
from .protocol import State, TopologySpec

__all__ = ["HostRecord", "TopologyRecord", "clusterduck_home", "find", "load_all"]

# `up` prepares hosts in parallel threads and each saves the record as it goes.
_SAVE_LOCK = threading.Lock()


def clusterduck_home() -> Path:
    return Path(os.environ.get("CLUSTERDUCK_HOME") or "~/.clusterduck").expanduser()


@dataclass
class HostRecord:
    name: str
    remote: bool
    control: str = ""
    pid: int = 0
    run_dir: str = ""
    ipc_dir: str = ""  # the 0700 directory of a private local topology's sockets
    python: str = ""
    connect: dict[str, Any] = field(default_factory=dict)  # the Host model, for SSH
    # A Slurm group's node supervisor: job_id, rank, size (nodes), node, partition,
    # output. Rank 0 is recorded under the group's name, rank r under "<group>#r".
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass
class TopologyRecord:
    name: str
    file: str
    code_dir: str
    topology: dict[str, Any]  # the validated file, as the pydantic model dumps it
    runtime: dict[str, Any] = field(default_factory=dict)  # protocol.TopologySpec
    # starting | running | finished | failed | stopped; written by deploy only
    status: str = State.STARTING.value
    started_at: float = field(default_factory=time.time)
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    final: dict[str, Any] | None = None  # the last status, kept once it ended
    run: int = 1  # every `up` of this name is a new run, with run folders of its own
    past_runs: dict[str, dict[str, str]] = field(default_factory=dict)  # run -> host -> dir
    curve: dict[str, str] | None = None

    @property
    def folder(self) -> Path:
        return clusterduck_home() / "topologies" / self.name

    @property
    def active(self) -> bool:
        return State(self.status).active

    @property
    def spec(self) -> TopologySpec:
        """The topology as the runtime sees it."""
        if not self.runtime:  # a record written before the runtime view was kept
            from .topology import Topology

            return TopologySpec.from_topology(Topology.model_validate(self.topology))
        return TopologySpec.from_dict(self.runtime)

    def save(self) -> None:
        with _SAVE_LOCK:
            self._save()

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        curve = data.pop("curve")
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.folder / "state.json")
        if curve:
            keys = self.folder / "keys.json"
            fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(curve, fh)

    @classmethod
    def load(cls, folder: Path) -> TopologyRecord:
        data = json.loads((folder / "state.json").read_text())
        data["hosts"] = {k: HostRecord(**v) for k, v in data["hosts"].items()}
        keys = folder / "keys.json"
        data["curve"] = json.loads(keys.read_text()) if keys.exists() else None
        return cls(**data)

    def run_dirs(self, run: int | None = None) -> dict[str, str]:
        """Each host's run folder of ``run`` (default: this one); empty if not kept."""
        if run is None or run == self.run:
            return {h: r.run_dir for h, r in self.hosts.items() if r.run_dir}
        return dict(self.past_runs.get(str(run), {}))

    def runs(self) -> list[int]:
        """Every run whose folders are known, oldest first."""
        return sorted({*(int(r) for r in self.past_runs), self.run})

    def holder(self, component: str, index: int) -> str:
        """The record key of the supervisor that runs instance ``component/index``
        (the host's name, or ``<group>#<rank>`` on a Slurm group's other nodes)."""
        spec = self.spec
        host = spec.component(component).host_of(index)
        rec = self.hosts.get(host)
        if rec is None or not rec.slurm:
            return host
        rank = spec.slot(host, component, index) % int(rec.slurm.get("size", 1))
        return host if rank == 0 else f"{host}#{rank}"

    def drop_keys(self) -> None:
        """Forget the CURVE keys (``down``): a stopped topology's keys open nothing."""
        self.curve = None
        with _SAVE_LOCK:
            (self.folder / "keys.json").unlink(missing_ok=True)

    def forget(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def load_all() -> list[TopologyRecord]:
    root = clusterduck_home() / "topologies"
    records = []
    for folder in sorted(root.glob("*")) if root.exists() else []:
        if (folder / "state.json").exists():
            try:
                records.append(TopologyRecord.load(folder))
            except (OSError, ValueError, TypeError):
                continue
    return records


def find(name: str | None) -> TopologyRecord:
    """The topology NAME, or the only running (else the only known) one (docs/reference.md §3)."""
    records = load_all()
    if name is not None:
        for rec in records:
            if rec.name == name:
                return rec
        known = ", ".join(r.name for r in records) or "none"
        raise StateError(f"no topology named {name!r} is known (known: {known})")
    running = [r for r in records if r.active]
    if len(running) == 1:
        return running[0]
    if not running and len(records) == 1:
        return records[0]
    pool = running or records
    if not pool:
        raise StateError("no topology is known here; start one with `clusterduck up FILE`")
    names = ", ".join(r.name for r in pool)
    if running:
        raise StateError(f"several topologies are running ({names}); name one of them")
    raise StateError(
        f"no topology is running, and several are known ({names}); name one of them "
        "(`clusterduck list` shows when each ran and how it ended)"
    )

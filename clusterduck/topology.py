"""The topology file as frozen pydantic models, mirroring SPEC §2 key for key.

Only shape and local rules live here (types, ranges, name syntax). Rules that need the
whole graph or the file's line numbers (unknown inputs, cycles, arity) live in
``validation.py``; YAML parsing and ``${VAR}`` expansion live in ``loader.py``.
Every default of the file format is written once, in this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .protocol import LOCALHOST

__all__ = [
    "LOCALHOST",
    "NAME_PATTERN",
    "Component",
    "Host",
    "Settings",
    "Spout",
    "Topology",
    "Worker",
    "parse_duration",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from ``30``, ``"30s"``, ``"250ms"``, ``"2m"`` or ``"1h"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 250ms or 2m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 250ms or 2m")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def _as_host_tuple(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(value)
    return value


Duration = Annotated[float | None, BeforeValidator(parse_duration)]
HostList = Annotated[tuple[str, ...], BeforeValidator(_as_host_tuple), Field(min_length=1)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(_Frozen):
    """How to reach a machine and where clusterduck keeps its files there."""

    address: str | None = None
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = None
    python: str = "python3"
    workdir: str = "~/.clusterduck"
    env: dict[str, str] = Field(default_factory=dict)


class Settings(_Frozen):
    serializer: Literal["pickle", "msgpack", "json"] = "pickle"
    security: Literal["auto", "curve", "none"] = "auto"
    on_error: Literal["skip", "stop"] = "skip"


class Component(_Frozen):
    """What spouts and workers share: a name, an entry point, args and hosts."""

    name: Name
    entry: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = Field(default_factory=dict)
    host: HostList = (LOCALHOST,)
    parallelism: int = Field(default=1, ge=1)

    @property
    def kind(self) -> str:
        return "spout" if isinstance(self, Spout) else "worker"

    def host_of(self, index: int) -> str:
        """Instances are spread over the listed hosts in turn."""
        return self.host[index % len(self.host)]


class Spout(Component):
    # Accepted by the model so validation can say "a spout takes no inputs" rather
    # than "unknown key"; validation rejects any non-empty value.
    inputs: list[str] = Field(default_factory=list)
    # Messages dispatched but not yet processed by the next components, at most (None:
    # credit alone bounds them; see runtime/credit.py and the README's "Flow control").
    max_pending: int | None = Field(default=None, ge=1)


class Worker(Component):
    inputs: list[str] = Field(min_length=1)
    bundle: bool = False
    sequential: bool = False
    sequence_start: int = 0
    gap_timeout: Duration = None
    grouping: Literal["shuffle", "key", "all"] = "shuffle"
    key: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    on_error: Literal["skip", "stop"] | None = None


class Topology(_Frozen):
    name: Name
    code: str = "."
    hosts: dict[str, Host] = Field(default_factory=dict)
    spouts: list[Spout] = Field(min_length=1)
    workers: list[Worker] = Field(default_factory=list)
    settings: Settings = Field(default_factory=Settings)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, hosts: dict[str, Host]) -> dict[str, Host]:
        for name in hosts:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
                raise ValueError(f"host name {name!r} must be letters, digits, '.', '_' or '-'")
        return hosts

    # -- graph helpers used by validation, the launcher and the runtime -------------

    @property
    def components(self) -> list[Component]:
        return [*self.spouts, *self.workers]

    def __iter__(self) -> Iterator[Component]:  # type: ignore[override]
        return iter(self.components)

    def component(self, name: str) -> Component:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise KeyError(name)

    def downstream(self, name: str) -> list[Worker]:
        """Workers that list ``name`` among their inputs, in file order."""
        return [w for w in self.workers if name in w.inputs]

    def sinks(self) -> list[Component]:
        """Components whose output goes nowhere (what ``testing`` collects)."""
        return [c for c in self.components if not self.downstream(c.name)]

    def topological_order(self) -> list[str]:
        """Spouts first, every worker after all its inputs (assumes no cycle)."""
        order: list[str] = []
        placed: set[str] = set()
        pending = list(self.components)
        while pending:
            progressed = False
            for comp in list(pending):
                inputs = getattr(comp, "inputs", [])
                if all(i in placed for i in inputs):
                    order.append(comp.name)
                    placed.add(comp.name)
                    pending.remove(comp)
                    progressed = True
            if not progressed:
                raise ValueError("topology has a cycle: " + ", ".join(c.name for c in pending))
        return order

    def host(self, name: str) -> Host:
        """The declared host, or the implicit ``localhost`` one."""
        return self.hosts.get(name) or Host()

    def hosts_used(self) -> list[str]:
        seen: dict[str, None] = {}
        for comp in self.components:
            for h in comp.host:
                seen.setdefault(h, None)
        return list(seen)

    def is_remote(self, host: str) -> bool:
        return host != LOCALHOST

    @property
    def uses_curve(self) -> bool:
        mode = self.settings.security
        if mode == "auto":
            return any(self.is_remote(h) for h in self.hosts_used())
        return mode == "curve"

    def on_error_of(self, worker: Worker) -> str:
        return worker.on_error or self.settings.on_error

    def instances(self) -> list[tuple[str, int, str]]:
        """Every (component, index, host) the topology runs."""
        return [(c.name, i, c.host_of(i)) for c in self.components for i in range(c.parallelism)]

"""The topology file as frozen pydantic models, mirroring docs/reference.md §2 key for key.

Only shape and local rules live here (types, ranges, name syntax). Rules that need the
whole graph or the file's line numbers (unknown inputs, cycles, arity) live in
``validation.py``; YAML parsing and ``${VAR}`` expansion live in ``loader.py``.
Every default of the file format is written once, in this module, and every key carries
its ``description``: ``clusterduck schema`` turns these models into the JSON Schema that
editors use, so a new key is documented by the ``Field`` that declares it (the test in
tests/test_schema.py fails on a key without one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from .protocol import LOCALHOST

__all__ = [
    "LOCALHOST",
    "NAME_PATTERN",
    "Component",
    "Host",
    "Settings",
    "SlurmRequest",
    "Spout",
    "Topology",
    "Worker",
    "parse_duration",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
ENTRY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
HOST_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
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


# The JSON Schema of what the file may hold (the validators accept more shapes than the
# Python types say: "30s", a single host name).
Duration = Annotated[
    float | None,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
                {"type": "null"},
            ]
        }
    ),
]
HostList = Annotated[
    tuple[str, ...],
    BeforeValidator(_as_host_tuple),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        }
    ),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_SLURM_TIME = re.compile(r"^(\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2})$")


def _slurm_time(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError('expected a Slurm time limit such as "02:00:00" or "30"')
    text = str(value).strip()
    if not _SLURM_TIME.match(text):
        raise ValueError(
            f'{text!r} is not a Slurm time limit: use minutes ("30"), "HH:MM:SS" or "D-HH:MM:SS"'
        )
    return text


SlurmTime = Annotated[
    str | None,
    BeforeValidator(_slurm_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _SLURM_TIME.pattern},
                {"type": "integer", "minimum": 0},
                {"type": "null"},
            ]
        }
    ),
]


class SlurmRequest(_Frozen):
    """What a Slurm group asks the scheduler for: one job, ``nodes`` machines."""

    nodes: int = Field(
        default=1,
        ge=1,
        description=(
            "How many machines the job asks for; one supervisor runs on each and the "
            "group's instances are spread over them in turn."
        ),
    )
    partition: str | None = Field(
        default=None,
        description="Slurm partition (sbatch --partition); the cluster's default when left out.",
    )
    time: SlurmTime = Field(
        default=None,
        description=(
            'Time limit in Slurm\'s forms ("30" minutes, "HH:MM:SS", "D-HH:MM:SS"); '
            "the partition's default when left out. The scheduler ends the job after it."
        ),
    )
    account: str | None = Field(
        default=None, description="Account charged for the job (sbatch --account)."
    )
    options: list[str] = Field(
        default_factory=list,
        description='Further sbatch options passed as they are, e.g. ["--mem=4G", "--qos=long"].',
    )


class Host(_Frozen):
    """How to reach a machine and where clusterduck keeps its files there."""

    address: str | None = Field(
        default=None,
        description=(
            "SSH target (looked up in ~/.ssh/config like `ssh` does) and the address other "
            "hosts' processes connect to. Default: the host's name. Under `localhost`: how "
            "remote hosts reach this machine (default: guessed from the route to them)."
        ),
    )
    user: str | None = Field(
        default=None, description=("SSH user. Default: ~/.ssh/config, then the current user.")
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description=("SSH port. Default: ~/.ssh/config, then 22.")
    )
    identity_file: str | None = Field(
        default=None,
        description=(
            "Private key for SSH, e.g. ~/.ssh/id_ed25519 (the SSH agent and ~/.ssh/config "
            "are used too)."
        ),
    )
    python: str = Field(
        default="python3",
        description=(
            "Interpreter on that host with clusterduck installed (same major.minor version "
            "as here) and pyzmq."
        ),
    )
    workdir: str = Field(
        default="~/.clusterduck",
        description=("Where the shipped code, logs and state live on that host."),
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Environment variables for every process on that host, e.g. {OMP_NUM_THREADS: "1"}.'
        ),
    )
    slurm: SlurmRequest | None = Field(
        default=None,
        description=(
            "Makes this host a Slurm group: its components run inside one Slurm job "
            "submitted with sbatch from this machine, instead of on a machine reached by SSH."
        ),
    )
    shared_fs: bool = Field(
        default=True,
        description=(
            "Slurm groups only: `workdir` is on a file system the compute nodes share with "
            "this machine (code is copied there once and read by every node). When false, "
            "the code travels inside the job script and logs stay on the nodes."
        ),
    )


class Settings(_Frozen):
    """Choices that apply to the whole topology."""

    serializer: Literal["pickle", "msgpack", "json"] = Field(
        default="pickle",
        description=(
            "How values travel between processes: pickle (any Python object), msgpack or "
            "json (plain data only)."
        ),
    )
    security: Literal["auto", "curve", "none"] = Field(
        default="auto",
        description=(
            "auto: CurveZMQ encryption and authentication whenever any host is remote; "
            "curve: always; none: never (anyone who can reach a port can send pickles)."
        ),
    )
    on_error: Literal["skip", "stop"] = Field(
        default="skip",
        description=(
            "When user code raises: skip logs, counts and drops the message; stop ends the "
            "whole topology. A worker's own on_error wins."
        ),
    )
    guarantee: Literal["at-most-once", "at-least-once"] = Field(
        default="at-most-once",
        description=(
            "at-most-once: nothing is kept once sent (a crashed process loses what it "
            "held); at-least-once: every spout message is kept until every branch below "
            "it is done, and dispatched again after a crash or message_timeout."
        ),
    )
    message_timeout: Duration = Field(
        default=30.0,
        description=(
            "at-least-once: a message not done within this long is dispatched again "
            "(30s, like Storm's topology.message.timeout.secs)."
        ),
    )


class Component(_Frozen):
    """What spouts and workers share: a name, an entry point, args and hosts."""

    name: Name = Field(
        description=(
            "Name of the component: lowercase letters, digits, '_' or '-'. Unique among the "
            "spouts and workers of the file (validate checks)."
        )
    )
    entry: str = Field(
        pattern=ENTRY_PATTERN,
        description=(
            "module:function or module:Class, imported from the code folder. validate "
            "imports it (unless --no-import) and checks it accepts the calls the runtime "
            "makes: spout(dispatch, **args), worker(value, **args), a bundled worker one "
            "argument per input, a class instantiated once with args."
        ),
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Keyword arguments for the entry (for a class: for its constructor). Relative "
            "paths are the code's business; they resolve inside code."
        ),
    )
    host: HostList = Field(
        default=(LOCALHOST,),
        description=(
            "Host name, or a list of them: instances are spread over the list in turn. Each "
            "must be declared under hosts: or be localhost (validate checks)."
        ),
    )
    parallelism: int = Field(
        default=1,
        ge=1,
        description=(
            "Number of instances (processes). Each message goes to one instance, chosen by "
            "grouping."
        ),
    )

    @property
    def kind(self) -> str:
        return "spout" if isinstance(self, Spout) else "worker"

    def host_of(self, index: int) -> str:
        """Instances are spread over the listed hosts in turn."""
        return self.host[index % len(self.host)]


class Spout(Component):
    """A data source: its entry is called with dispatch(seq_id, value) and returns to end."""

    # Accepted by the model so validation can say "a spout takes no inputs" rather
    # than "unknown key"; validation rejects any non-empty value.
    inputs: list[str] = Field(
        default_factory=list,
        json_schema_extra={"maxItems": 0},
        description="Not allowed: a spout takes no inputs.",
    )
    max_pending: int | None = Field(
        default=None,
        ge=1,
        description=(
            "At most this many messages dispatched by this spout but not yet processed by "
            "the components it feeds; dispatch blocks meanwhile. Unset: the credit each "
            "consumer grants (about 20 ms of its work) bounds them, which needs no tuning."
        ),
    )


class Worker(Component):
    """A function (or class) called once per message of its inputs."""

    inputs: list[str] = Field(
        min_length=1,
        description=(
            "Names of the spouts and workers this worker reads from; every one of them sends "
            "it all of its output. Each must name a component of this file, once, and the "
            "graph must have no cycle (validate checks)."
        ),
    )
    bundle: bool = Field(
        default=False,
        description=(
            "Wait until every input has delivered sequence id n, then call the entry once "
            "with one argument per input, in the order of inputs. Not with grouping: key."
        ),
    )
    sequential: bool = Field(
        default=False,
        description=(
            "Process ids strictly in order from sequence_start, whatever the arrival order. "
            "Needs parallelism: 1, and bundle: true when there are several inputs."
        ),
    )
    sequence_start: int = Field(default=0, description=("First id of a sequential worker."))
    gap_timeout: Duration = Field(
        default=None,
        description=(
            "A sequential worker skips a missing id after this long (30, 30s, 250ms, 2m, 1h); "
            "by default it waits for it until the end of stream."
        ),
    )
    grouping: Literal["shuffle", "key", "all"] = Field(
        default="shuffle",
        description=(
            "Which instance gets each message: shuffle (the least loaded), key (a stable hash "
            "of key(value); needs key:), all (every instance)."
        ),
    )
    key: str | None = Field(
        default=None,
        pattern=ENTRY_PATTERN,
        description=(
            "module:function mapping a value to a hashable key; only with grouping: key "
            "(validate imports and checks it)."
        ),
    )
    on_error: Literal["skip", "stop"] | None = Field(
        default=None,
        description=("skip or stop when this worker's code raises. Default: settings.on_error."),
    )


class Topology(_Frozen):
    """A clusterduck topology: spouts and workers, where each runs, and how they connect."""

    name: Name = Field(
        description=(
            "Name of the topology (lowercase letters, digits, '_' or '-'); status, logs and "
            "down refer to it. Unique per user among running topologies."
        )
    )
    code: str = Field(
        default=".",
        description=(
            "Folder whose modules the entries import, relative to this file; shipped to "
            "remote hosts by up. validate checks that it exists (unless --no-import)."
        ),
    )
    hosts: dict[str, Host] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"pattern": HOST_NAME_PATTERN}},
        description=(
            "Machines by name. Without it everything runs on this machine (localhost, no SSH)."
        ),
    )
    spouts: list[Spout] = Field(min_length=1, description=("The data sources; at least one."))
    workers: list[Worker] = Field(
        default_factory=list, description=("The functions the data flows through.")
    )
    settings: Settings = Field(
        default_factory=Settings, description=("Choices for the whole topology.")
    )

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, hosts: dict[str, Host]) -> dict[str, Host]:
        for name in hosts:
            if not re.match(HOST_NAME_PATTERN, name):
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

    def is_slurm(self, host: str) -> bool:
        """True when ``host`` is a Slurm group (its processes run inside a Slurm job)."""
        return self.host(host).slurm is not None

    @property
    def uses_curve(self) -> bool:
        mode = self.settings.security
        if mode == "auto":
            return any(self.is_remote(h) for h in self.hosts_used())
        return mode == "curve"

    @property
    def uses_private_ipc(self) -> bool:
        """``security: auto`` on one machine: ipc sockets in a 0700 directory (the file
        system is the authentication); ``none`` keeps plain loopback tcp."""
        return self.settings.security == "auto" and not any(
            self.is_remote(h) for h in self.hosts_used()
        )

    def on_error_of(self, worker: Worker) -> str:
        return worker.on_error or self.settings.on_error

    def instances(self) -> list[tuple[str, int, str]]:
        """Every (component, index, host) the topology runs."""
        return [(c.name, i, c.host_of(i)) for c in self.components for i in range(c.parallelism)]

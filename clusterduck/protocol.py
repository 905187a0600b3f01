"""Everything that crosses a process or host boundary, defined once.

The CLI, ``deploy``, the supervisor, every component process, ``console`` and
``testing`` read and write these types; nothing else builds a message by hand. The
module needs the standard library only (no pydantic, yaml, click, rich, paramiko or
zmq), because the processes that run on hosts import it and pay for every import on
every start.

What lives here:

* ``State``: the states of an instance, a host and a topology; which of them are ended.
* Frame layout: data, probe and end-of-stream frames from a sender, and the credit
  grants a receiver sends back (``data_header``, ``eos_header``, ``probe_header``,
  ``parse_header``, ``parse_frame``, ``pack_count``, ``grant_frame``, ``parse_grant``).
  Frames come from the network: parsing never raises, it returns ``None`` for anything
  malformed.
* Specs: ``TopologySpec``/``ComponentSpec`` (the validated topology as the runtime needs
  it, without the pydantic models), ``SupervisorSpec`` and ``ProcessSpec`` (JSON on a
  process's stdin).
* Control messages between CLI, supervisors and processes, and their replies.
* Status: ``InstanceStatus``, ``HostStatus``, ``ComponentStatus``, ``TopologyStatus``;
  ``TopologyStatus.to_dict()`` is the documented ``clusterduck status --json``.
* Layout of a run directory (logs, ``final.json``) and the process marker.

Decoding anything read from a socket or a file goes through ``from_dict`` methods,
which raise :class:`~clusterduck.exceptions.ProtocolError` (never ``KeyError``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from .exceptions import ProtocolError
from .record import EMPTY, Record

if TYPE_CHECKING:  # only for the type checker: the runtime never imports pydantic
    from .topology import Topology

__all__ = [
    "LOCALHOST",
    "MAX_KEPT_RUNS",
    "PROTOCOL_VERSION",
    "Batch",
    "Columns",
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "Acks",
    "Anchor",
    "ComponentSpec",
    "ComponentStatus",
    "ControlRequest",
    "CurveKeys",
    "EdgeStatus",
    "Frame",
    "GapStatus",
    "Grant",
    "Header",
    "HostStatus",
    "InstanceReport",
    "InstanceStatus",
    "Op",
    "ProcessSpec",
    "RestartNotice",
    "RunLayout",
    "SlurmJobStatus",
    "State",
    "StepReply",
    "SupervisorReady",
    "SupervisorSpec",
    "ThisMachine",
    "TopologySpec",
    "TopologyStatus",
    "VersionMismatch",
    "Wiring",
    "BAD_ANCHOR",
    "BAD_COUNT",
    "BAD_FRAME_COUNT",
    "BAD_HEADER",
    "ONE_PART_BELOW",
    "acks_frame",
    "batch_columns",
    "data_header",
    "data_part",
    "decode_json",
    "decode_ready",
    "eos_header",
    "grant_frame",
    "pack_anchor",
    "pack_count",
    "parse_anchor",
    "parse_reply",
    "restart_frame",
    "parse_frame",
    "parse_grant",
    "parse_header",
    "probe_header",
    "same_release",
    "split_data_part",
    "process_message_from_dict",
    "read_frame",
    "topology_marker",
]

PROTOCOL_VERSION = 3  # 2: data frames carry columns [ids, values]; 3: one-part data frames

# The host that is this machine; every other host name is reached over SSH.
LOCALHOST = "localhost"

# A batch of messages as it travels: (sequence id, value) pairs.
Batch = list[tuple[int, Any]]
# A decoded data frame's batch (batch_columns): its seq ids (a ``range`` when
# consecutive) and its values.
Columns = tuple[Sequence[int], list[Any]]

# How many bundle parts or out-of-order ids one instance may hold (docs/reference.md §1: bounded).
MAX_PENDING = 100_000

# Delivery guarantees (settings.guarantee; README "Guarantees").
AT_MOST_ONCE = "at-most-once"
AT_LEAST_ONCE = "at-least-once"
DEFAULT_MESSAGE_TIMEOUT = 30.0


# -- states ---------------------------------------------------------------------------


class State(str, Enum):
    """States of an instance, a host's supervisor, or a whole topology."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"  # an instance that died and will not be restarted
    STOPPED = "stopped"  # a topology that `down` stopped before it finished
    FAILING = "failing"  # a topology with a failed host while others still run
    BROKEN = "broken"  # a topology with a host that does not answer
    UNREACHABLE = "unreachable"  # a host (and its instances) that does not answer

    @property
    def ended(self) -> bool:
        """Nothing will run any more: the state is final."""
        return self in _ENDED

    @property
    def active(self) -> bool:
        """Still starting or running (what ``list`` and ``find`` call running)."""
        return self in (State.STARTING, State.RUNNING)

    @classmethod
    def parse(cls, value: object) -> State:
        try:
            return cls(value)
        except ValueError as exc:
            raise ProtocolError(f"unknown state {value!r}") from exc


_ENDED = frozenset({State.FINISHED, State.FAILED, State.CRASHED, State.STOPPED})


# -- frames ---------------------------------------------------------------------------
#
# Sender -> receiver (a DEALER with identity ``component/index`` -> a ROUTER, so the
# ROUTER adds the identity in front):
#   data           [D<component/index>, payload, total]
#   small data     [d<total><n><component/index>payload]  (one part: the int64 running
#                  total, one byte n = the length of ``component/index``; ``data_part``)
#   probe          [P<component/index>, total]
#   end of stream  [E<component/index>]
# where ``total`` (``pack_count``) is the sender's running count of messages sent to this
# receiver (runtime/credit.py says why the count is absolute), and ``payload`` is the
# serializer's encoding of ``[ids, values]`` (``batch_columns``; runtime/codec.py): ids
# the first seq id when they are consecutive, else the list of them.
# Receiver -> sender, on the same connection:
#   grant          [G<processed><limit><cost>]  (two int64 and a float64, little endian)
# Under at-least-once (runtime/guarantee.py), a data frame has a fourth part, its anchor
# ``<edge><root>...`` (int64s: the frame's random edge id and the spout batches its
# messages came from), and receivers send back, on the same connection:
#   acks           [A<root><xor>...]  (int64 pairs: XORs to apply to those roots)
#   restart notice [R<pid>]  (int64: a restarted process; replay what is pending)
# The test collector is a plain PULL: it receives the same data and end-of-stream frames
# and sends no grants.

_DATA = b"D"
_DATA_PART = b"d"
_EOS = b"E"
_PROBE = b"P"
_GRANT = b"G"
_ACKS = b"A"
_RESTART = b"R"
_COUNT = struct.Struct("<q")
# The fixed start of a one-part data frame: kind, running total, length of the sender.
_PART_HEAD = struct.Struct("<cqB")
#: Payloads below this many bytes travel in one-part data frames (``data_part``): each
#: part of a message is a send and a receive of its own in libzmq (~5 us per part at
#: 10,000 msgs/s), while joining copies the payload; larger payloads keep three parts.
ONE_PART_BELOW = 4096
_GRANT_BODY = struct.Struct("<qqd")
#: The most roots one data frame's anchor names, and (root, xor) pairs one ack frame holds.
MAX_ANCHOR_ROOTS = 4096
MAX_ACK_PAIRS = 65536


def data_header(component: str, index: int) -> bytes:
    """First frame of a data message: ``D`` and the sender ``component/index``."""
    return _DATA + f"{component}/{index}".encode()


def eos_header(component: str, index: int) -> bytes:
    """The only frame of an end-of-stream message from ``component/index``."""
    return _EOS + f"{component}/{index}".encode()


def probe_header(component: str, index: int) -> bytes:
    """First frame of a probe: a sender without credit asking again (runtime/credit.py)."""
    return _PROBE + f"{component}/{index}".encode()


def data_part(header: bytes, total: int, payload: bytes) -> bytes | None:
    """A data frame in one part (``header`` is :func:`data_header`'s), or None when the
    sender's name is too long for its length byte (send the three parts instead)."""
    name = header[1:]
    if len(name) > 255:
        return None
    return _PART_HEAD.pack(_DATA_PART, total, len(name)) + name + payload


def split_data_part(data: bytes) -> tuple[bytes, int, bytes] | None:
    """A one-part data frame as (sender name as bytes, running total, payload), or None
    when ``data`` is not laid out as one (the sender is not checked here). Never raises."""
    if data[:1] != _DATA_PART or len(data) < _PART_HEAD.size:
        return None
    _, total, n = _PART_HEAD.unpack_from(data)
    end = _PART_HEAD.size + n
    if len(data) < end:
        return None
    return bytes(data[_PART_HEAD.size : end]), total, bytes(data[end:])


def pack_count(total: int) -> bytes:
    """The running total a data or probe frame carries."""
    return _COUNT.pack(total)


def _unpack_count(data: bytes) -> int | None:
    if len(data) != _COUNT.size:
        return None
    total = int(_COUNT.unpack(data)[0])
    return total if total >= 0 else None


class Header(NamedTuple):
    """A parsed frame header: data, probe or end of stream, and who sent it (a named
    tuple, like Frame: one of each is made for every frame received)."""

    eos: bool
    sender: str  # "component/index"
    probe: bool = False

    @property
    def component(self) -> str:
        return self.sender.rpartition("/")[0]


def parse_header(frame: bytes) -> Header | None:
    """The header of a received data or end-of-stream frame, or ``None`` when it is not
    one of those (a probe header is read by :func:`parse_frame`).

    Never raises: frames come from the network, and a bad one is counted and dropped by
    the caller, not a crash."""
    return _parse_header(frame, (_DATA, _EOS))


def _parse_header(frame: bytes, kinds: tuple[bytes, ...]) -> Header | None:
    if len(frame) < 4 or len(frame) > 512 or frame[:1] not in kinds:
        return None
    try:
        sender = bytes(frame[1:]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    component, slash, index = sender.rpartition("/")
    if not slash or not component or not index.isdigit() or not index.isascii():
        return None
    return Header(eos=frame[:1] == _EOS, sender=sender, probe=frame[:1] == _PROBE)


def batch_columns(decoded: Any) -> Columns | None:
    """The batch a decoded data payload holds, or None when it is not ``[ids, values]``:
    ``values`` a list, ``ids`` the first of consecutive int seq ids or a list of as many
    int ids as values. Never raises (the payload comes from a peer)."""
    if type(decoded) is not list or len(decoded) != 2:
        return None
    ids, values = decoded
    if type(values) is not list:
        return None
    if type(ids) is int:
        return range(ids, ids + len(values)), values
    if type(ids) is list and len(ids) == len(values) and set(map(type, ids)) <= {int}:
        return ids, values
    return None


class Anchor(NamedTuple):
    """What a data frame carries under at-least-once: its edge id and its roots."""

    edge: int
    roots: tuple[int, ...]


_INT64S: dict[int, struct.Struct] = {}


def _int64s(n: int) -> struct.Struct:
    """``n`` little-endian int64 (compiled once per count: anchors are per frame)."""
    layout = _INT64S.get(n)
    if layout is None:
        layout = _INT64S[n] = struct.Struct(f"<{n}q")
    return layout


def pack_anchor(edge: int, roots: Sequence[int]) -> bytes:
    """The fourth part of an at-least-once data frame."""
    return _int64s(1 + len(roots)).pack(edge, *roots)


def parse_anchor(data: bytes) -> Anchor | None:
    """An anchor, or ``None`` when ``data`` is not one. Never raises."""
    n = len(data) // 8
    if not data or len(data) % 8 or n > 1 + MAX_ANCHOR_ROOTS:
        return None
    values = _int64s(n).unpack(data)
    return Anchor(values[0], values[1:])


class Acks(NamedTuple):
    """XORs a receiver sends towards the spouts: ``(root, xor)`` pairs."""

    pairs: tuple[tuple[int, int], ...]


class RestartNotice(NamedTuple):
    """A restarted process (its ``pid``): what it held is gone, replay it now."""

    pid: int


def acks_frame(acks: Mapping[int, int]) -> bytes:
    """The one frame of an ack message (at most MAX_ACK_PAIRS pairs: split larger)."""
    flat = [v for pair in acks.items() for v in pair]
    return _ACKS + struct.pack(f"<{len(flat)}q", *flat)


def restart_frame(pid: int) -> bytes:
    return _RESTART + _COUNT.pack(pid)


def parse_reply(data: bytes) -> Grant | Acks | RestartNotice | None:
    """What a receiver sent back on a data connection (grant, acks, restart notice), or
    ``None`` when it is none of them. Never raises."""
    kind = data[:1]
    if kind == _GRANT:
        return parse_grant(data)
    if kind == _ACKS:
        n = (len(data) - 1) // 8
        if (len(data) - 1) % 16 or not n or n > 2 * MAX_ACK_PAIRS:
            return None
        values = struct.unpack(f"<{n}q", bytes(data[1:]))
        return Acks(tuple(zip(values[0::2], values[1::2], strict=True)))
    if kind == _RESTART and len(data) == 1 + _COUNT.size:
        return RestartNotice(int(_COUNT.unpack(bytes(data[1:]))[0]))
    return None


class Frame(NamedTuple):
    """A whole received message from a sender: its header, payload (data) and the
    sender's running ``total`` (data and probe; 0 for end of stream); the ``anchor`` of
    an at-least-once data frame."""

    header: Header
    payload: bytes = b""
    total: int = 0
    anchor: Anchor | None = None

    @property
    def sender(self) -> str:
        return self.header.sender


# Why a received message is not a frame of ours (``read_frame``); the inbound guard
# counts rejections under these names (``status`` shows them as ``rejected_frames``).
BAD_FRAME_COUNT = "frame_count"  # not 3 (or 1) frames for data, 2 for a probe, 1 for EOS
BAD_HEADER = "header"  # empty, unknown kind letter, not UTF-8, not ``component/index``
BAD_COUNT = "count"  # the running total is not a non-negative int64
BAD_ANCHOR = "anchor"  # an at-least-once data frame's anchor is not edge + roots


def read_frame(frames: Sequence[bytes]) -> Frame | str:
    """A data, probe or end-of-stream message (without the ROUTER's identity frame), or
    the reason it is malformed (``BAD_FRAME_COUNT``, ``BAD_HEADER``, ``BAD_COUNT``,
    ``BAD_ANCHOR``). Never raises."""
    if not frames or len(frames) > 4:
        return BAD_FRAME_COUNT
    first = bytes(frames[0])
    if first[:1] == _DATA_PART:
        if len(frames) != 1:
            return BAD_FRAME_COUNT
        split = split_data_part(first)
        if split is None:
            return BAD_HEADER
        name, total, payload = split
        header = _parse_header(_DATA + name, (_DATA,))
        if header is None:
            return BAD_HEADER
        return BAD_COUNT if total < 0 else Frame(header, payload, total)
    header = _parse_header(first, (_DATA, _EOS, _PROBE))
    if header is None:
        return BAD_HEADER
    if header.eos:
        return Frame(header) if len(frames) == 1 else BAD_FRAME_COUNT
    if header.probe:
        if len(frames) != 2:
            return BAD_FRAME_COUNT
        count = _unpack_count(bytes(frames[1]))
        return BAD_COUNT if count is None else Frame(header, total=count)
    if len(frames) == 4:
        count = _unpack_count(bytes(frames[2]))
        if count is None:
            return BAD_COUNT
        anchor = parse_anchor(bytes(frames[3]))
        return BAD_ANCHOR if anchor is None else Frame(header, bytes(frames[1]), count, anchor)
    if len(frames) != 3:
        return BAD_FRAME_COUNT
    count = _unpack_count(bytes(frames[2]))
    return BAD_COUNT if count is None else Frame(header, bytes(frames[1]), count)


def parse_frame(frames: Sequence[bytes]) -> Frame | None:
    """:func:`read_frame` without the reason: ``None`` when malformed. Never raises."""
    frame = read_frame(frames)
    return frame if isinstance(frame, Frame) else None


class Grant(NamedTuple):
    """What a receiver tells one sender: processed up to ``processed``, accept up to
    ``limit`` (both in the sender's numbering); ``cost`` is its seconds per message."""

    processed: int
    limit: int
    cost: float


def grant_frame(grant: Grant) -> bytes:
    """The one frame of a grant."""
    return _GRANT + _GRANT_BODY.pack(grant.processed, grant.limit, grant.cost)


def parse_grant(data: bytes) -> Grant | None:
    """A grant, or ``None`` when ``data`` is not a well-formed one. Never raises."""
    if data[:1] != _GRANT or len(data) != 1 + _GRANT_BODY.size:
        return None
    processed, limit, cost = _GRANT_BODY.unpack(bytes(data[1:]))
    if processed < 0 or limit < processed or not cost >= 0.0 or cost == float("inf"):
        return None
    return Grant(int(processed), int(limit), float(cost))


# -- decoding helpers -----------------------------------------------------------------

T = TypeVar("T")


def decode_json(data: bytes | str) -> dict[str, Any]:
    """A JSON object from a socket or a file; ProtocolError for anything else."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _get(
    data: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], default: Any = ...
) -> T:
    """``data[key]`` checked against ``kind``; a missing key takes ``default`` if given."""
    if key not in data or data[key] is None and default is not ...:
        if default is ...:
            raise ProtocolError(f"missing field {key!r}")
        return default  # type: ignore[no-any-return]
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise ProtocolError(f"field {key!r}: expected {kind}, got {value!r:.80}")
    return value  # type: ignore[return-value]


def _counts(data: Mapping[str, Any], key: str) -> dict[str, int]:
    """A mapping of counters (``rejected_frames``); ProtocolError if it is not one."""
    value = _get(data, key, dict, {})
    if not all(isinstance(k, str) and type(v) is int for k, v in value.items()):
        raise ProtocolError(f"field {key!r}: expected a mapping of counts")
    return dict(value)


def _str_dict(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ProtocolError(f"{what}: expected a mapping of strings")
    return dict(value)


# -- CURVE keys -----------------------------------------------------------------------


class CurveKeys(Record, hidden=("secret", "secrets")):
    """CURVE keys (z85 text), generated by ``up`` and kept in ``keys.json`` (0600).

    ``public``/``secret``: the topology's keypair, used by the CLI, supervisors (control
    sockets) and the test collector; a process's copy holds no topology secret (``""``).
    ``members``: every instance's public key by instance name (``component/index``): the
    ZAP handler accepts these and the topology's key, and names the connection after the
    key (its ``User-Id``), so a receiver knows *which instance* sent a frame, whatever
    the frame says. ``secrets``: the secret keys of the instances the holder runs (all of
    them in ``keys.json``, a host's in its supervisor, one in a process)."""

    public: str
    secret: str
    members: Mapping[str, str] = EMPTY
    secrets: Mapping[str, str] = EMPTY

    def to_dict(self) -> dict[str, Any]:
        return {
            "public": self.public,
            "secret": self.secret,
            "members": dict(self.members),
            "secrets": dict(self.secrets),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CurveKeys | None:
        if not data:
            return None
        return cls(
            _get(data, "public", str),
            _get(data, "secret", str),
            _str_dict(data.get("members") or {}, "curve members"),
            _str_dict(data.get("secrets") or {}, "curve secrets"),
        )

    def for_host(self, topology: TopologySpec, host: str) -> CurveKeys:
        """What a host's supervisor needs: the secrets of the instances placed there."""
        here = {f"{c}/{i}" for c, i, h in topology.instances() if h == host}
        return self.replace(secrets={n: k for n, k in self.secrets.items() if n in here})

    def for_instance(self, name: str) -> CurveKeys:
        """What one process needs: its own keypair and the public keys, no other secret."""
        own = {name: self.secrets[name]} if name in self.secrets else {}
        # Without instance keys (one key for the whole topology) the process needs it.
        return CurveKeys(self.public, "" if own else self.secret, self.members, own)


# -- specs ----------------------------------------------------------------------------


class ComponentSpec(Record):
    """One spout or worker as the runtime needs it, already validated by the CLI."""

    name: str
    kind: str  # "spout" | "worker"
    entry: str
    args: Mapping[str, Any] = EMPTY
    hosts: tuple[str, ...] = (LOCALHOST,)
    parallelism: int = 1
    inputs: tuple[str, ...] = ()
    bundle: bool = False
    sequential: bool = False
    sequence_start: int = 0
    gap_timeout: float | None = None
    grouping: str = "shuffle"  # "shuffle" | "key" | "all"
    key: str | None = None
    on_error: str = "skip"  # resolved: the worker's own, else the topology's
    max_pending: int | None = None  # a spout's cap on messages not yet processed

    @property
    def is_spout(self) -> bool:
        return self.kind == "spout"

    def host_of(self, index: int) -> str:
        """Instances are spread over the listed hosts in turn."""
        return self.hosts[index % len(self.hosts)]

    def instance_names(self) -> list[str]:
        return [f"{self.name}/{i}" for i in range(self.parallelism)]

    def to_dict(self) -> dict[str, Any]:
        data = self.as_dict()
        data["args"] = dict(self.args)
        data["hosts"] = list(self.hosts)
        data["inputs"] = list(self.inputs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComponentSpec:
        gap = data.get("gap_timeout")
        if gap is not None and not isinstance(gap, (int, float)):
            raise ProtocolError(f"gap_timeout: expected seconds, got {gap!r}")
        return cls(
            name=_get(data, "name", str),
            kind=_get(data, "kind", str),
            entry=_get(data, "entry", str),
            args=_get(data, "args", dict, {}),
            hosts=tuple(_get(data, "hosts", list)),
            parallelism=_get(data, "parallelism", int, 1),
            inputs=tuple(_get(data, "inputs", list, [])),
            bundle=_get(data, "bundle", bool, False),
            sequential=_get(data, "sequential", bool, False),
            sequence_start=_get(data, "sequence_start", int, 0),
            gap_timeout=None if gap is None else float(gap),
            grouping=_get(data, "grouping", str, "shuffle"),
            key=_get(data, "key", str, None),
            on_error=_get(data, "on_error", str, "skip"),
            max_pending=_get(data, "max_pending", int, None),
        )


class TopologySpec(Record):
    """The validated topology without pydantic: what supervisors and processes read."""

    name: str
    components: tuple[ComponentSpec, ...]
    serializer: str = "pickle"
    on_error: str = "skip"
    guarantee: str = AT_MOST_ONCE  # AT_MOST_ONCE | AT_LEAST_ONCE
    message_timeout: float = DEFAULT_MESSAGE_TIMEOUT  # at-least-once: replay after this

    @property
    def at_least_once(self) -> bool:
        return self.guarantee == AT_LEAST_ONCE

    @classmethod
    def from_topology(cls, topo: Topology) -> TopologySpec:
        """The runtime's view of a validated pydantic ``Topology``."""
        comps = []
        for c in topo.components:
            worker = c.kind == "worker"
            comps.append(
                ComponentSpec(
                    name=c.name,
                    kind=c.kind,
                    entry=c.entry,
                    args=dict(c.args),
                    hosts=tuple(c.host),
                    parallelism=c.parallelism,
                    inputs=tuple(getattr(c, "inputs", ())),
                    bundle=bool(getattr(c, "bundle", False)),
                    sequential=bool(getattr(c, "sequential", False)),
                    sequence_start=int(getattr(c, "sequence_start", 0)),
                    gap_timeout=getattr(c, "gap_timeout", None),
                    grouping=str(getattr(c, "grouping", "shuffle")),
                    key=getattr(c, "key", None),
                    on_error=(getattr(c, "on_error", None) if worker else None)
                    or topo.settings.on_error,
                    max_pending=getattr(c, "max_pending", None),
                )
            )
        settings = topo.settings
        return cls(
            topo.name,
            tuple(comps),
            settings.serializer,
            settings.on_error,
            settings.guarantee,
            settings.message_timeout or DEFAULT_MESSAGE_TIMEOUT,
        )

    @property
    def spouts(self) -> list[ComponentSpec]:
        return [c for c in self.components if c.is_spout]

    @property
    def workers(self) -> list[ComponentSpec]:
        return [c for c in self.components if not c.is_spout]

    def component(self, name: str) -> ComponentSpec:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise KeyError(name)

    def downstream(self, name: str) -> list[ComponentSpec]:
        """Workers that list ``name`` among their inputs, in file order."""
        return [w for w in self.workers if name in w.inputs]

    def sinks(self) -> list[ComponentSpec]:
        """Components whose output goes nowhere (what ``testing`` collects)."""
        return [c for c in self.components if not self.downstream(c.name)]

    def topological_order(self) -> list[str]:
        """Spouts first, every worker after all its inputs (validated: no cycle)."""
        order: list[str] = []
        pending = list(self.components)
        while pending:
            ready = [c for c in pending if all(i in order for i in c.inputs)]
            if not ready:
                raise ProtocolError("topology has a cycle: " + ", ".join(c.name for c in pending))
            for comp in ready:
                order.append(comp.name)
                pending.remove(comp)
        return order

    def instances(self) -> list[tuple[str, int, str]]:
        """Every (component, index, host) the topology runs."""
        return [(c.name, i, c.host_of(i)) for c in self.components for i in range(c.parallelism)]

    def slot(self, host: str, component: str, index: int) -> int:
        """Position of an instance among those placed on ``host`` (file order): a Slurm
        group's node ``rank`` of ``size`` runs the instances whose slot % size == rank."""
        mine = [(c, i) for c, i, h in self.instances() if h == host]
        return mine.index((component, index))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serializer": self.serializer,
            "on_error": self.on_error,
            "guarantee": self.guarantee,
            "message_timeout": self.message_timeout,
            "components": [c.to_dict() for c in self.components],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TopologySpec:
        comps = _get(data, "components", list)
        return cls(
            name=_get(data, "name", str),
            components=tuple(ComponentSpec.from_dict(c) for c in comps),
            serializer=_get(data, "serializer", str, "pickle"),
            on_error=_get(data, "on_error", str, "skip"),
            guarantee=_get(data, "guarantee", str, AT_MOST_ONCE),
            message_timeout=_get(data, "message_timeout", float, DEFAULT_MESSAGE_TIMEOUT),
        )


class Wiring(Record):
    """Every instance's inbox endpoints (``{"comp/i": {input: endpoint}}``), and where
    sinks send their results in ``testing.run_processes`` (else None)."""

    endpoints: Mapping[str, Mapping[str, str]]
    collector: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoints": {k: dict(v) for k, v in self.endpoints.items()},
            "collector": self.collector,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Wiring:
        raw = _get(data, "endpoints", dict)
        endpoints = {str(k): _str_dict(v, f"endpoints of {k}") for k, v in raw.items()}
        return cls(endpoints, _get(data, "collector", str, None))


def same_release(a: str, b: str) -> bool:
    """Two clusterduck versions that work together: the same major.minor."""
    return a.split(".")[:2] == b.split(".")[:2]


class ThisMachine(Record):
    """A Slurm group's spec: how a node recognises the machine ``up`` ran on (then it
    binds and advertises as that machine's own supervisor would, e.g. on loopback)."""

    names: tuple[str, ...]
    bind_host: str
    advertise: str

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "bind_host": self.bind_host, "advertise": self.advertise}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThisMachine:
        return cls(
            tuple(str(n) for n in _get(data, "names", list)),
            _get(data, "bind_host", str),
            _get(data, "advertise", str),
        )


class SupervisorSpec(Record):
    """What ``up`` hands a host's supervisor on stdin (JSON).

    A Slurm group's spec (``--slurm``) also says where to report readiness
    (``report_to``), how to recognise this machine (``this_machine``) and, without a
    shared file system, carries the code (``code_archive``, base64 tar.gz); each node
    then sets ``share`` = (rank, size): it runs every size-th instance of the group.

    ``expect_version`` is ``up``'s clusterduck version: the starter compares it with its
    own before it detaches, so starting the supervisor is also the host's interpreter
    check (one remote interpreter start-up per host, not two)."""

    topology: TopologySpec
    host: str
    code_dir: str
    run_dir: str
    bind_host: str
    advertise: str
    curve: CurveKeys | None = None
    env: Mapping[str, str] = EMPTY
    share: tuple[int, int] = (0, 1)
    report_to: str | None = None
    this_machine: ThisMachine | None = None
    code_archive: str | None = None

    def runs(self, component: str, index: int, host: str) -> bool:
        """Whether this supervisor runs instance ``component/index`` placed on ``host``."""
        if host != self.host:
            return False
        rank, size = self.share
        return size == 1 or self.topology.slot(host, component, index) % size == rank

    expect_version: str | None = None
    # ``security: auto`` on one machine: every socket is ipc in a new 0700 directory
    private: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "topology": self.topology.to_dict(),
            "host": self.host,
            "code_dir": self.code_dir,
            "run_dir": self.run_dir,
            "bind_host": self.bind_host,
            "advertise": self.advertise,
            "curve": self.curve.to_dict() if self.curve else None,
            "env": dict(self.env),
            "share": list(self.share),
            "report_to": self.report_to,
            "this_machine": self.this_machine.to_dict() if self.this_machine else None,
            "code_archive": self.code_archive,
            "expect_version": self.expect_version,
            "private": self.private,
        }

    @staticmethod
    def expected_version(data: Mapping[str, Any]) -> str | None:
        """``expect_version`` of a spec that may not parse at all (it may come from
        another release): read first, so a mismatch is answered as one."""
        value = data.get("expect_version")
        return value if isinstance(value, str) else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupervisorSpec:
        _check_version(data)
        share = _get(data, "share", list, [0, 1])
        if len(share) != 2 or not all(isinstance(x, int) for x in share) or share[1] < 1:
            raise ProtocolError(f"share must be [rank, size], got {share!r}")
        here = _get(data, "this_machine", dict, None)
        return cls(
            topology=TopologySpec.from_dict(_get(data, "topology", dict)),
            host=_get(data, "host", str),
            code_dir=_get(data, "code_dir", str),
            run_dir=_get(data, "run_dir", str),
            bind_host=_get(data, "bind_host", str),
            advertise=_get(data, "advertise", str),
            curve=CurveKeys.from_dict(_get(data, "curve", dict, None)),
            env=_str_dict(data.get("env") or {}, "env"),
            share=(share[0], share[1]),
            report_to=_get(data, "report_to", str, None),
            this_machine=ThisMachine.from_dict(here) if here is not None else None,
            code_archive=_get(data, "code_archive", str, None),
            expect_version=_get(data, "expect_version", str, None),
            private=_get(data, "private", bool, False),
        )


class ProcessSpec(Record):
    """What a supervisor hands one component process on stdin (JSON).

    A restarted process also gets its old ``ports``, the ``wiring``, ``start`` and the
    upstream instances whose end of stream it already had (``ended``)."""

    topology: TopologySpec
    component: str
    index: int
    host: str
    code_dir: str
    bind_host: str
    advertise: str
    supervisor: str
    curve: CurveKeys | None = None
    stop: bool = False
    ports: Mapping[str, int] = EMPTY
    wiring: Wiring | None = None
    start: bool = False
    ended: tuple[str, ...] = ()
    ipc_dir: str | None = None  # private local mode: bind ipc sockets here, not tcp
    # at-least-once: where this instance keeps what must outlive it (a sequential
    # worker's cursor, a spout's resume point); the run directory's ``state``
    state_dir: str | None = None

    @property
    def name(self) -> str:
        return f"{self.component}/{self.index}"

    @property
    def restarted(self) -> bool:
        """A restart after a crash: the first start gets no wiring yet."""
        return self.wiring is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "topology": self.topology.to_dict(),
            "component": self.component,
            "index": self.index,
            "host": self.host,
            "code_dir": self.code_dir,
            "bind_host": self.bind_host,
            "advertise": self.advertise,
            "supervisor": self.supervisor,
            "curve": self.curve.to_dict() if self.curve else None,
            "stop": self.stop,
            "ports": dict(self.ports),
            "wiring": self.wiring.to_dict() if self.wiring else None,
            "start": self.start,
            "ended": list(self.ended),
            "ipc_dir": self.ipc_dir,
            "state_dir": self.state_dir,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessSpec:
        _check_version(data)
        wiring = _get(data, "wiring", dict, None)
        return cls(
            topology=TopologySpec.from_dict(_get(data, "topology", dict)),
            component=_get(data, "component", str),
            index=_get(data, "index", int),
            host=_get(data, "host", str),
            code_dir=_get(data, "code_dir", str),
            bind_host=_get(data, "bind_host", str),
            advertise=_get(data, "advertise", str),
            supervisor=_get(data, "supervisor", str),
            curve=CurveKeys.from_dict(_get(data, "curve", dict, None)),
            stop=_get(data, "stop", bool, False),
            ports={str(k): int(v) for k, v in _get(data, "ports", dict, {}).items()},
            wiring=Wiring.from_dict(wiring) if wiring is not None else None,
            start=_get(data, "start", bool, False),
            ended=tuple(str(e) for e in _get(data, "ended", list, [])),
            ipc_dir=_get(data, "ipc_dir", str, None),
            state_dir=_get(data, "state_dir", str, None),
        )


class SupervisorReady(Record):
    """The one line a starting supervisor prints: where to reach it, its paths with
    ``~`` expanded on its host, and its clusterduck version (so ``up`` catches a
    supervisor too old to check ``expect_version`` itself)."""

    control: str
    pid: int
    run_dir: str
    code_dir: str
    rank: int = 0  # a Slurm group's node: its rank in the job, and its name
    node: str = ""
    clusterduck: str = "?"
    ipc_dir: str | None = None  # private local mode: the sockets' 0700 directory

    def to_dict(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupervisorReady:
        return cls(
            _get(data, "control", str),
            _get(data, "pid", int),
            _get(data, "run_dir", str),
            _get(data, "code_dir", str),
            _get(data, "rank", int, 0),
            _get(data, "node", str, ""),
            _get(data, "clusterduck", str, "?"),
            _get(data, "ipc_dir", str, None),
        )


class VersionMismatch(Record):
    """The starter's line instead of :class:`SupervisorReady` when its clusterduck does
    not match the spec's ``expect_version`` in major.minor (exit 3, nothing started)."""

    clusterduck: str  # the host's version
    python: str  # the host interpreter's version
    executable: str

    EXIT_CODE: ClassVar[int] = 3

    def to_dict(self) -> dict[str, Any]:
        return {"error": "version", **self.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionMismatch:
        return cls(
            _get(data, "clusterduck", str, "?"),
            _get(data, "python", str, "?"),
            _get(data, "executable", str, "?"),
        )


def decode_ready(line: bytes | str) -> SupervisorReady | VersionMismatch:
    """The readiness line of ``python -m clusterduck.runtime.supervisor``."""
    data = decode_json(line)
    if data.get("error") == "version":
        return VersionMismatch.from_dict(data)
    return SupervisorReady.from_dict(data)


def _check_version(data: Mapping[str, Any]) -> None:
    version = data.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r}, this side speaks {PROTOCOL_VERSION}: "
            "install the same clusterduck version on every host"
        )


# -- control messages -----------------------------------------------------------------


class Op(str, Enum):
    """Every control operation, whoever sends it."""

    # CLI (or a peer supervisor) → supervisor
    SPAWN = "spawn"
    WIRE = "wire"
    START = "start"
    STATUS = "status"
    STOP = "stop"
    KILL = "kill"
    ABORT = "abort"
    LEAVE = "leave"  # the CLI has the final status: exit as soon as it is written
    # process → supervisor
    HELLO = "hello"
    FAILED = "failed"
    READY = "ready"
    REPORT = "report"
    FINISHED = "finished"
    FATAL = "fatal"


class ControlRequest(Record):
    """A request to a supervisor, or a supervisor's command to one of its processes.

    ``wiring`` and ``supervisors`` come with ``wire``; ``reason`` with ``abort``;
    ``timeout`` bounds the steps of ``up`` that wait for every process."""

    op: Op
    timeout: float | None = None
    wiring: Wiring | None = None
    supervisors: tuple[str, ...] = ()
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op.value}
        if self.timeout is not None:
            data["timeout"] = self.timeout
        if self.wiring is not None:
            data.update(self.wiring.to_dict())
        if self.supervisors:
            data["supervisors"] = list(self.supervisors)
        if self.reason is not None:
            data["reason"] = self.reason
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlRequest:
        try:
            op = Op(data.get("op"))
        except ValueError as exc:
            raise ProtocolError(f"unknown op {data.get('op')!r}") from exc
        return cls(
            op=op,
            timeout=_get(data, "timeout", float, None),
            wiring=Wiring.from_dict(data) if op is Op.WIRE else None,
            supervisors=tuple(_get(data, "supervisors", list, [])),
            reason=_get(data, "reason", str, None),
        )


class StepReply(Record):
    """A supervisor's answer to ``spawn``, ``wire``, ``start``, ``stop`` or ``kill``.

    ``swept`` (kill, abort): the supervisor also swept its session, killing that many
    leftover processes of the topology, so ``down`` needs no SSH sweep of that host."""

    ok: bool
    error: str | None = None
    component: str | None = None
    log_tail: str = ""
    endpoints: Mapping[str, Mapping[str, str]] | None = None  # spawn: every local inbox
    swept: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": self.ok}
        if not self.ok:
            data.update(error=self.error, component=self.component, log_tail=self.log_tail)
        if self.endpoints is not None:
            data["endpoints"] = {k: dict(v) for k, v in self.endpoints.items()}
        if self.swept is not None:
            data["swept"] = self.swept
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepReply:
        endpoints = data.get("endpoints")
        return cls(
            ok=_get(data, "ok", bool),
            error=_get(data, "error", str, None),
            component=_get(data, "component", str, None),
            log_tail=_get(data, "log_tail", str, ""),
            endpoints=Wiring.from_dict({"endpoints": endpoints}).endpoints
            if endpoints is not None
            else None,
            swept=_get(data, "swept", int, None),
        )


class Hello(Record):
    """A process's first word: its inbox per input (endpoint and port)."""

    pid: int
    endpoints: Mapping[str, str]
    ports: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": Op.HELLO.value,
            "pid": self.pid,
            "endpoints": dict(self.endpoints),
            "ports": dict(self.ports),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hello:
        ports = _get(data, "ports", dict)
        if not all(isinstance(v, int) for v in ports.values()):
            raise ProtocolError("ports: expected integers")
        return cls(_get(data, "pid", int), _str_dict(data.get("endpoints"), "endpoints"), ports)


class EdgeStatus(Record):
    """Flow control on one edge, from an instance to one downstream instance: the credit
    it holds there, the messages in flight and waiting for credit, and how long the last
    of them will wait (in-flight messages times the downstream's measured cost)."""

    to: str  # "component/index"
    credit: int = 0
    in_flight: int = 0
    waiting: int = 0
    queue_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_dict(cls, data: Any) -> EdgeStatus:
        if not isinstance(data, Mapping):
            raise ProtocolError(f"edge: expected an object, got {data!r:.80}")
        return cls(
            to=_get(data, "to", str),
            credit=_get(data, "credit", int, 0),
            in_flight=_get(data, "in_flight", int, 0),
            waiting=_get(data, "waiting", int, 0),
            queue_ms=_get(data, "queue_ms", float, 0.0),
        )


def _edges(data: Mapping[str, Any]) -> tuple[EdgeStatus, ...]:
    return tuple(EdgeStatus.from_dict(e) for e in _get(data, "edges", list, []))


class GapStatus(Record):
    """A bundled or sequential worker held up by an id that has not come for ``seconds``
    (runtime/stall.py): ``missing`` names the inputs whose part of it is missing
    (empty: it came from no input)."""

    seq: int
    seconds: float
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "seconds": self.seconds, "missing": list(self.missing)}

    @classmethod
    def from_dict(cls, data: Any) -> GapStatus | None:
        """A gap from its JSON object (``null``: none)."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ProtocolError(f"field 'gap': expected an object, got {data!r:.80}")
        missing = _get(data, "missing", list, [])
        return cls(
            _get(data, "seq", int),
            _get(data, "seconds", float, 0.0),
            tuple(str(m) for m in missing),
        )


class InstanceReport(Record):
    """What a process tells its supervisor: ``ready``, every half second ``report``,
    ``finished``, ``fatal`` (on_error: stop) or ``failed`` (could not start)."""

    op: Op
    pid: int
    state: State = State.STARTING
    ended: tuple[str, ...] = ()  # upstream instances whose end of stream arrived
    received: int = 0
    emitted: int = 0
    errors: int = 0
    last_error: str | None = None
    rate: float = 0.0
    uptime: float = 0.0
    blocked_seconds: float = 0.0
    backlog: int = 0
    anomalies: Mapping[str, int] = EMPTY
    error: str | None = None  # ``failed``: why it could not start
    in_flight: int = 0  # sent downstream, not yet processed there (flow control)
    cost_ms: float = 0.0  # a worker's measured work per message
    edges: tuple[EdgeStatus, ...] = ()
    rejected_frames: Mapping[str, int] = EMPTY  # dropped, by kind
    pending: int = 0  # at-least-once: a spout's messages not done yet, a worker's held
    replayed: int = 0  # at-least-once: messages a spout dispatched again
    gap: GapStatus | None = None  # held up by an id that does not come (runtime/stall.py)

    OPS: ClassVar[frozenset[Op]] = frozenset(
        {Op.READY, Op.REPORT, Op.FINISHED, Op.FATAL, Op.FAILED}
    )

    def to_dict(self) -> dict[str, Any]:
        data = self.as_dict()
        data["op"] = self.op.value
        data["state"] = self.state.value
        data["ended"] = list(self.ended)
        data["anomalies"] = dict(self.anomalies)
        data["edges"] = [e.to_dict() for e in self.edges]
        data["rejected_frames"] = dict(self.rejected_frames)
        data["gap"] = self.gap.to_dict() if self.gap is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceReport:
        op = Op(data.get("op"))
        if op not in cls.OPS:
            raise ProtocolError(f"op {op.value!r} is not a report")
        return cls(
            op=op,
            pid=_get(data, "pid", int),
            state=State.parse(data.get("state", "starting")),
            ended=tuple(str(e) for e in _get(data, "ended", list, [])),
            received=_get(data, "received", int, 0),
            emitted=_get(data, "emitted", int, 0),
            errors=_get(data, "errors", int, 0),
            last_error=_get(data, "last_error", str, None),
            rate=_get(data, "rate", float, 0.0),
            uptime=_get(data, "uptime", float, 0.0),
            blocked_seconds=_get(data, "blocked_seconds", float, 0.0),
            backlog=_get(data, "backlog", int, 0),
            anomalies=_get(data, "anomalies", dict, {}),
            error=_get(data, "error", str, None),
            in_flight=_get(data, "in_flight", int, 0),
            cost_ms=_get(data, "cost_ms", float, 0.0),
            edges=_edges(data),
            rejected_frames=_counts(data, "rejected_frames"),
            pending=_get(data, "pending", int, 0),
            replayed=_get(data, "replayed", int, 0),
            gap=GapStatus.from_dict(data.get("gap")),
        )


def decode_process_message(data: bytes) -> Hello | InstanceReport:
    """A message from a component process to its supervisor."""
    return process_message_from_dict(decode_json(data))


def process_message_from_dict(raw: Mapping[str, Any]) -> Hello | InstanceReport:
    """A process's message from its decoded JSON object."""
    try:
        if raw.get("op") == Op.HELLO.value:
            return Hello.from_dict(raw)
        return InstanceReport.from_dict(raw)
    except ValueError as exc:  # an unknown op or state
        raise ProtocolError(str(exc)) from exc


# -- status ---------------------------------------------------------------------------


class InstanceStatus(Record):
    """One instance in ``status``: a row of the table, of ``status --json``."""

    component: str
    index: int
    host: str
    state: State
    pid: int | None = None
    endpoint: str | None = None
    received: int = 0
    emitted: int = 0
    errors: int = 0
    anomalies: Mapping[str, int] = EMPTY
    backlog: int = 0
    blocked_seconds: float = 0.0
    rate: float = 0.0
    restarts: int = 0
    lost: int = 0
    uptime: float = 0.0
    last_error: str | None = None
    in_flight: int = 0
    cost_ms: float = 0.0
    edges: tuple[EdgeStatus, ...] = ()
    # frames this instance dropped unread (malformed, unexpected sender...), by kind
    rejected_frames: Mapping[str, int] = EMPTY
    pending: int = 0  # at-least-once: not done yet (spout), held for acks (worker)
    replayed: int = 0  # at-least-once: messages this spout dispatched again
    # Seconds since a running instance last reported, once that is well past the report
    # interval (else 0): a worker reports between calls of its code, so one call has run
    # that long (stuck, or very slow work).
    silent_seconds: float = 0.0
    # A bundled or sequential worker waiting for an id that does not come (null: none).
    gap: GapStatus | None = None

    # The documented key order of a row in ``status --json``.
    KEYS: ClassVar[tuple[str, ...]] = (
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
        "blocked_seconds",
        "rate",
        "restarts",
        "lost",
        "uptime",
        "last_error",
        "in_flight",
        "cost_ms",
        "edges",
        "rejected_frames",
        "pending",
        "replayed",
        "silent_seconds",
        "gap",
    )

    def to_dict(self, *, with_component: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"component": self.component} if with_component else {}
        for key in self.KEYS:
            value = getattr(self, key)
            if key == "state":
                value = value.value
            elif key in ("anomalies", "rejected_frames"):
                value = dict(value)
            elif key == "edges":
                value = [e.to_dict() for e in value]
            elif key == "gap":
                value = value.to_dict() if value is not None else None
            data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], component: str | None = None) -> InstanceStatus:
        return cls(
            component=component if component is not None else _get(data, "component", str),
            index=_get(data, "index", int),
            host=_get(data, "host", str),
            state=State.parse(data.get("state")),
            pid=_get(data, "pid", int, None),
            endpoint=_get(data, "endpoint", str, None),
            received=_get(data, "received", int, 0),
            emitted=_get(data, "emitted", int, 0),
            errors=_get(data, "errors", int, 0),
            anomalies=_get(data, "anomalies", dict, {}),
            backlog=_get(data, "backlog", int, 0),
            blocked_seconds=_get(data, "blocked_seconds", float, 0.0),
            rate=_get(data, "rate", float, 0.0),
            restarts=_get(data, "restarts", int, 0),
            lost=_get(data, "lost", int, 0),
            uptime=_get(data, "uptime", float, 0.0),
            last_error=_get(data, "last_error", str, None),
            in_flight=_get(data, "in_flight", int, 0),
            cost_ms=_get(data, "cost_ms", float, 0.0),
            edges=_edges(data),
            rejected_frames=_counts(data, "rejected_frames"),
            pending=_get(data, "pending", int, 0),
            replayed=_get(data, "replayed", int, 0),
            silent_seconds=_get(data, "silent_seconds", float, 0.0),
            gap=GapStatus.from_dict(data.get("gap")),
        )


class HostStatus(Record):
    """A supervisor's answer to ``status``, and its ``final.json``."""

    host: str
    state: State
    pid: int | None = None
    failure: str | None = None
    instances: tuple[InstanceStatus, ...] = ()
    # control messages the supervisor dropped unread, by kind
    rejected_frames: Mapping[str, int] = EMPTY

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "state": self.state.value,
            "failure": self.failure,
            "instances": [i.to_dict(with_component=True) for i in self.instances],
            "rejected_frames": dict(self.rejected_frames),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostStatus:
        return cls(
            host=_get(data, "host", str),
            state=State.parse(data.get("state")),
            pid=_get(data, "pid", int, None),
            failure=_get(data, "failure", str, None),
            instances=tuple(InstanceStatus.from_dict(r) for r in _get(data, "instances", list, [])),
            rejected_frames=_counts(data, "rejected_frames"),
        )


class ComponentStatus(Record):
    name: str
    kind: str
    instances: tuple[InstanceStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "instances": [i.to_dict() for i in self.instances],
        }


class SlurmJobStatus(Record):
    """A Slurm group's job in ``status``: the scheduler's view of it."""

    job_id: str
    state: str  # Slurm's own word: PENDING, RUNNING, COMPLETED, TIMEOUT, CANCELLED, …
    reason: str = ""
    nodes: tuple[str, ...] = ()
    partition: str = ""

    def describe(self) -> str:
        reason = "" if self.reason in ("", "None", "(null)") else f" ({self.reason})"
        nodes = ", ".join(self.nodes) or "-"
        return f"job {self.job_id} {self.state.lower()}{reason} on {nodes}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "nodes": list(self.nodes),
            "partition": self.partition,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlurmJobStatus:
        return cls(
            _get(data, "job_id", str),
            _get(data, "state", str),
            _get(data, "reason", str, ""),
            tuple(str(n) for n in _get(data, "nodes", list, [])),
            _get(data, "partition", str, ""),
        )


class TopologyStatus(Record):
    """The whole topology; ``to_dict()`` is exactly ``clusterduck status --json``
    (``slurm``, group → job, only when the topology has Slurm groups)."""

    name: str
    state: State
    hosts: Mapping[str, State] = EMPTY
    problems: tuple[str, ...] = ()
    components: tuple[ComponentStatus, ...] = ()
    slurm: Mapping[str, SlurmJobStatus] = EMPTY
    # control messages the supervisors dropped unread, by kind, summed over hosts
    rejected_frames: Mapping[str, int] = EMPTY
    guarantee: str = AT_MOST_ONCE  # settings.guarantee

    def instances(self) -> Iterable[InstanceStatus]:
        for comp in self.components:
            yield from comp.instances

    def component(self, name: str) -> ComponentStatus:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            "hosts": {h: s.value for h, s in self.hosts.items()},
            "problems": list(self.problems),
            "rejected_frames": dict(self.rejected_frames),
            "guarantee": self.guarantee,
            "components": [c.to_dict() for c in self.components],
        }
        if self.slurm:
            data["slurm"] = {group: job.to_dict() for group, job in self.slurm.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TopologyStatus:
        comps = []
        for c in _get(data, "components", list, []):
            name = _get(c, "name", str)
            rows = _get(c, "instances", list, [])
            comps.append(
                ComponentStatus(
                    name,
                    _get(c, "kind", str, "worker"),
                    tuple(InstanceStatus.from_dict(r, component=name) for r in rows),
                )
            )
        hosts = _get(data, "hosts", dict, {})
        return cls(
            name=_get(data, "name", str),
            state=State.parse(data.get("state")),
            hosts={str(h): State.parse(s) for h, s in hosts.items()},
            problems=tuple(str(p) for p in _get(data, "problems", list, [])),
            components=tuple(comps),
            slurm={
                str(g): SlurmJobStatus.from_dict(j)
                for g, j in _get(data, "slurm", dict, {}).items()
            },
            rejected_frames=_counts(data, "rejected_frames"),
            guarantee=_get(data, "guarantee", str, AT_MOST_ONCE),
        )


# -- files and processes on a host ----------------------------------------------------


# Runs of one topology kept in the record (``logs --run N``); older run folders stay on
# disk but are no longer listed.
MAX_KEPT_RUNS = 20


class RunLayout(Record):
    """Where one run of a topology keeps its files on a host (POSIX paths, because the
    host may be remote): ``<workdir>/runs/<topology>/<run>/`` holds
    ``logs/<comp>.<i>.log``, ``supervisor.log`` and ``final.json``. Every ``up`` is a new
    run, so logs never mix runs."""

    run_dir: str

    @classmethod
    def of_run(cls, workdir: str, topology: str, run: int) -> RunLayout:
        return cls(f"{workdir.rstrip('/')}/runs/{topology}/{run}")

    @property
    def logs(self) -> str:
        return str(PurePosixPath(self.run_dir) / "logs")

    def instance_log(self, component: str, index: int) -> str:
        return str(PurePosixPath(self.logs) / f"{component}.{index}.log")

    @property
    def supervisor_log(self) -> str:
        return str(PurePosixPath(self.run_dir) / "supervisor.log")

    @property
    def final_status(self) -> str:
        return str(PurePosixPath(self.run_dir) / "final.json")


def topology_marker(name: str) -> list[str]:
    """Arguments every process of topology ``name`` carries, so that a sweep after pid
    reuse can never hit another topology's processes (and ``ps`` shows whose it is)."""
    return ["--topology", name]

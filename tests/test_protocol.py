"""protocol.py: what crosses a process boundary round-trips, and bad input is refused
with a typed error (or None for frames), never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterduck.exceptions import ProtocolError
from clusterduck.loader import load
from clusterduck.protocol import (
    ControlRequest,
    CurveKeys,
    EdgeStatus,
    Grant,
    HostStatus,
    InstanceReport,
    InstanceStatus,
    Op,
    ProcessSpec,
    State,
    StepReply,
    SupervisorReady,
    SupervisorSpec,
    TopologySpec,
    TopologyStatus,
    VersionMismatch,
    Wiring,
    data_header,
    decode_json,
    decode_process_message,
    decode_ready,
    eos_header,
    grant_frame,
    pack_count,
    parse_frame,
    parse_grant,
    parse_header,
    probe_header,
)
from tests.conftest import EXAMPLES

# The documented `status --json` keys (README / docs/reference.md): changing them breaks users.
TOPOLOGY_KEYS = [
    "name",
    "state",
    "hosts",
    "problems",
    "rejected_frames",
    "guarantee",
    "components",
]
COMPONENT_KEYS = ["name", "kind", "instances"]
ROW_KEYS = [
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
]
EDGE_KEYS = ["to", "credit", "in_flight", "waiting", "queue_ms"]


def test_ended_states() -> None:
    assert {s for s in State if s.ended} == {
        State.FINISHED,
        State.FAILED,
        State.CRASHED,
        State.STOPPED,
    }
    assert {s for s in State if s.active} == {State.STARTING, State.RUNNING}
    with pytest.raises(ProtocolError):
        State.parse("sleeping")


def test_headers_round_trip() -> None:
    for header, eos in ((data_header("split-words", 12), False), (eos_header("a", 0), True)):
        parsed = parse_header(header)
        assert parsed is not None and parsed.eos is eos
    parsed = parse_header(data_header("split-words", 12))
    assert parsed is not None
    assert (parsed.sender, parsed.component) == ("split-words/12", "split-words")


@pytest.mark.parametrize(
    "frame",
    [b"", b"D", b"X" + b"a/1", b"Da/", b"Da/x", b"D/1", b"Dab", b"D\xff\xfe/1", b"D" + b"a" * 600],
)
def test_bad_headers_are_refused_not_raised(frame: bytes) -> None:
    assert parse_header(frame) is None


@given(st.binary(max_size=64))
def test_parse_header_never_raises(frame: bytes) -> None:
    parsed = parse_header(frame)
    if parsed is not None:
        assert frame[:1] in (b"D", b"E") and "/" in parsed.sender


def test_data_probe_and_eos_frames_round_trip() -> None:
    data = parse_frame([data_header("w", 3), b"payload", pack_count(120)])
    assert data is not None and not data.header.eos and not data.header.probe
    assert (data.sender, data.payload, data.total) == ("w/3", b"payload", 120)
    probe = parse_frame([probe_header("w", 3), pack_count(7)])
    assert probe is not None and probe.header.probe and probe.total == 7
    eos = parse_frame([eos_header("w", 3)])
    assert eos is not None and eos.header.eos
    assert parse_header(probe_header("w", 3)) is None  # not a data or end-of-stream frame


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"Dw/1", b"payload"],  # no running total
        [b"Dw/1", b"payload", b"short"],
        [b"Dw/1", b"payload", pack_count(-1)],
        [b"Pw/1"],
        [b"Pw/1", pack_count(1), b"extra"],
        [b"Ew/1", b"extra"],
        [b"Xw/1", b"payload", pack_count(1)],
    ],
)
def test_bad_frames_are_refused_not_raised(frames: list[bytes]) -> None:
    assert parse_frame(frames) is None


@given(st.lists(st.binary(max_size=24), max_size=4))
def test_parse_frame_never_raises(frames: list[bytes]) -> None:
    parsed = parse_frame(frames)
    if parsed is not None:
        assert frames[0][:1] in (b"D", b"E", b"P") and parsed.total >= 0


def test_grants_round_trip_and_bad_ones_are_refused() -> None:
    grant = Grant(10, 30, 0.002)
    assert parse_grant(grant_frame(grant)) == grant
    assert parse_grant(grant_frame(grant)[:-1]) is None
    assert parse_grant(b"X" + grant_frame(grant)[1:]) is None
    assert parse_grant(grant_frame(Grant(10, 5, 0.0))) is None  # limit below processed
    assert parse_grant(grant_frame(Grant(0, 5, float("nan")))) is None


@given(st.binary(max_size=40))
def test_parse_grant_never_raises(data: bytes) -> None:
    grant = parse_grant(data)
    if grant is not None:
        assert 0 <= grant.processed <= grant.limit and grant.cost >= 0


def spec() -> TopologySpec:
    return TopologySpec.from_topology(load(EXAMPLES / "bundled.yaml").topology)


def test_topology_spec_round_trips_and_resolves_on_error() -> None:
    original = spec()
    again = TopologySpec.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again == original
    assert original.topological_order()[0] in {s.name for s in original.spouts}
    for comp in original.components:
        assert comp.on_error in ("skip", "stop")


def test_specs_round_trip_through_json() -> None:
    sup = SupervisorSpec(spec(), "localhost", "/code", "/run", "127.0.0.1", "127.0.0.1")
    assert SupervisorSpec.from_dict(json.loads(json.dumps(sup.to_dict()))) == sup
    proc = ProcessSpec(
        spec(),
        "ordered",
        0,
        "localhost",
        "/code",
        "127.0.0.1",
        "127.0.0.1",
        "tcp://127.0.0.1:5",
        ports={"left": 4000},
        wiring=Wiring({"ordered/0": {"left": "tcp://127.0.0.1:4000"}}, None),
        start=True,
        ended=("left/0",),
    )
    assert ProcessSpec.from_dict(json.loads(json.dumps(proc.to_dict()))) == proc


def test_curve_keys_give_a_host_and_a_process_only_their_own_secrets() -> None:
    from clusterduck.runtime.transport import generate_curve_keys

    topo = spec()
    names = [f"{c}/{i}" for c, i, _ in topo.instances()]
    keys = generate_curve_keys(names)
    assert CurveKeys.from_dict(json.loads(json.dumps(keys.to_dict()))) == keys
    assert set(keys.members) == set(keys.secrets) == set(names)
    assert len({keys.secret, *keys.secrets.values()}) == len(names) + 1
    assert keys.for_host(topo, "localhost") == keys  # every instance runs there
    elsewhere = keys.for_host(topo, "elsewhere")
    assert elsewhere.secrets == {} and elsewhere.members == keys.members
    one = keys.for_instance(names[0])
    assert one.secret == "" and one.secrets == {names[0]: keys.secrets[names[0]]}
    assert one.members == keys.members and one.public == keys.public
    assert not any(secret in repr(keys) for secret in [keys.secret, *keys.secrets.values()])


def test_a_spec_from_another_version_is_refused_with_the_fix() -> None:
    data = SupervisorSpec(spec(), "h", "/c", "/r", "0.0.0.0", "h").to_dict()
    data["version"] = 99
    with pytest.raises(ProtocolError, match="same clusterduck version"):
        SupervisorSpec.from_dict(data)


def test_expect_version_round_trips_and_is_read_from_any_spec() -> None:
    sup = SupervisorSpec(spec(), "h", "/c", "/r", "0.0.0.0", "h", expect_version="0.1.0")
    data = json.loads(json.dumps(sup.to_dict()))
    assert SupervisorSpec.from_dict(data) == sup
    # Read before parsing: a spec of another release need not parse at all.
    assert SupervisorSpec.expected_version({"version": 99, "expect_version": "9.9"}) == "9.9"
    assert SupervisorSpec.expected_version({"expect_version": 3}) is None


def test_readiness_line_is_ready_or_a_typed_version_error() -> None:
    ready = SupervisorReady("tcp://10.0.0.1:5", 42, "/r", "/c", clusterduck="0.1.0")
    assert decode_ready(json.dumps(ready.to_dict())) == ready
    old = {"control": "tcp://10.0.0.1:5", "pid": 42, "run_dir": "/r", "code_dir": "/c"}
    assert decode_ready(json.dumps(old)) == SupervisorReady("tcp://10.0.0.1:5", 42, "/r", "/c")
    mismatch = VersionMismatch("0.2.0", "3.11.2", "/usr/bin/python3")
    line = json.dumps(mismatch.to_dict())
    assert json.loads(line)["error"] == "version" and decode_ready(line) == mismatch
    with pytest.raises(ProtocolError):
        decode_ready('{"pid": 1}')


def test_control_messages_round_trip() -> None:
    wire = ControlRequest(
        Op.WIRE,
        timeout=60.0,
        wiring=Wiring({"a/0": {"s": "tcp://h:1"}}, "tcp://c:2"),
        supervisors=("tcp://h:3",),
    )
    assert ControlRequest.from_dict(wire.to_dict()) == wire
    reply = StepReply(ok=False, error="boom", component="a/0", log_tail="x")
    assert StepReply.from_dict(reply.to_dict()) == reply
    killed = StepReply(ok=True, swept=2)
    assert StepReply.from_dict(json.loads(json.dumps(killed.to_dict()))) == killed
    assert StepReply.from_dict({"ok": True}).swept is None
    report = InstanceReport(Op.REPORT, 42, state=State.RUNNING, received=3, anomalies={"late": 1})
    assert decode_process_message(json.dumps(report.to_dict()).encode()) == report


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"op": "dance"}',
        b'{"op": "report"}',
        b'{"op": "report", "pid": "x"}',
        b'{"op": "hello", "pid": 1, "endpoints": {"a": 1}, "ports": {}}',
        b'{"op": "report", "pid": 1, "state": "sleeping"}',
    ],
)
def test_malformed_process_messages_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_process_message(raw)


def test_malformed_control_requests_raise_protocol_error() -> None:
    for raw in ({"op": "wire"}, {"op": "spawn", "timeout": "soon"}, {}):
        with pytest.raises(ProtocolError):
            ControlRequest.from_dict(raw)
    with pytest.raises(ProtocolError):
        decode_json(b"\xff")


def test_status_json_keeps_the_documented_keys() -> None:
    row = InstanceStatus("w", 0, "localhost", State.RUNNING, pid=7, anomalies={"late": 2})
    host = HostStatus("localhost", State.RUNNING, 9, None, (row,))
    assert HostStatus.from_dict(json.loads(json.dumps(host.to_dict()))) == host
    from clusterduck.protocol import ComponentStatus

    status = TopologyStatus(
        "t",
        State.RUNNING,
        {"localhost": State.RUNNING},
        ("x",),
        (ComponentStatus("w", "worker", (row,)),),
    )
    doc = json.loads(status.to_json())
    assert list(doc) == TOPOLOGY_KEYS
    assert list(doc["components"][0]) == COMPONENT_KEYS
    assert list(doc["components"][0]["instances"][0]) == ROW_KEYS
    edge = EdgeStatus("sink/0", credit=40, in_flight=60, waiting=3, queue_ms=12.5)
    flowing = row.replace(in_flight=60, cost_ms=0.2, edges=(edge,))
    flow_doc = json.loads(json.dumps(flowing.to_dict()))
    assert list(flow_doc["edges"][0]) == EDGE_KEYS
    assert InstanceStatus.from_dict(flow_doc, component="w") == flowing
    assert doc["state"] == "running" and doc["hosts"] == {"localhost": "running"}
    assert TopologyStatus.from_dict(doc) == status

"""Inbound guard: any frames in, a checked batch / probe / end of stream or a counted
rejection out; grants and control messages likewise. Frames are laid out as
clusterduck.protocol builds them (data: header, payload, running count)."""

from __future__ import annotations

import pickle
import struct
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from clusterduck.protocol import (
    ControlRequest,
    Grant,
    Op,
    data_header,
    data_part,
    eos_header,
    grant_frame,
    pack_count,
    probe_header,
)
from clusterduck.runtime.codec import get_codec
from clusterduck.runtime.inbound import (
    ANCHOR,
    CONTROL_FRAME_COUNT,
    CONTROL_OVERSIZED,
    CONTROL_SHAPE,
    CONTROL_UNDECODABLE,
    COUNT,
    FRAME_COUNT,
    GRANT,
    HEADER,
    OVERSIZED,
    PEER,
    REJECT_KINDS,
    SENDER,
    SHAPE,
    UNDECODABLE,
    ControlGuard,
    DataBatch,
    EndOfStream,
    InboundGuard,
    Probe,
    Rejections,
    check_grant,
)

EXPECTED = {"numbers/0", "numbers/1"}
N0 = b"numbers/0"


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Lines:
    """Collects what the guard logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, fmt: str, *args: Any) -> None:
        self.lines.append(fmt % args)


def guard(**kw: Any) -> tuple[InboundGuard, Rejections]:
    rejections = Rejections(
        "relay/0",
        clock=kw.pop("clock", FakeClock()),
        log=kw.pop("log", Lines()),
        log_interval=kw.pop("log_interval", 10.0),
    )
    return InboundGuard("relay/0 <- numbers", EXPECTED, PICKLE.decode, rejections, **kw), rejections


def same(
    got: object, sender: str, batch: list[tuple[int, Any]], total: int, anchor: Any = None
) -> bool:
    """``got`` is the DataBatch of ``batch`` (its columns: ids and values)."""
    return (
        isinstance(got, DataBatch)
        and (got.sender, got.batch, got.total, got.anchor) == (sender, batch, total, anchor)
        and list(got.seqs) == [seq for seq, _ in batch]
        and got.values == [value for _, value in batch]
    )


PICKLE = get_codec("pickle")


def data(sender: str, payload: bytes, total: int, *, one_part: bool = False) -> list[bytes]:
    comp, _, index = sender.partition("/")
    if one_part:
        part = data_part(data_header(comp, int(index)), total, payload)
        assert part is not None
        return [part]
    return [data_header(comp, int(index)), payload, pack_count(total)]


def raw_part(header: bytes, total: int, payload: bytes, *, length: int | None = None) -> bytes:
    """A one-part data frame laid out by hand (``length``: a lying length byte)."""
    name = header[1:]
    n = len(name) if length is None else length
    return struct.pack("<cqB", b"d", total, n) + name + payload


def test_good_batch_probe_and_end_of_stream_pass() -> None:
    g, r = guard()
    batch = [(1, "a"), (2, {"b": 1})]
    assert same(g.check(N0, data("numbers/0", PICKLE.dumps(batch), 2)), "numbers/0", batch, 2)
    assert g.check(b"numbers/1", [eos_header("numbers", 1)]) == EndOfStream("numbers/1")
    assert g.check(N0, [probe_header("numbers", 0), pack_count(7)]) == Probe("numbers/0", 7)
    assert same(g.check(None, data("numbers/1", PICKLE.dumps([]), 0)), "numbers/1", [], 0)
    assert r.as_dict() == {}


def test_an_at_least_once_frame_passes_with_its_anchor_and_replies_are_checked() -> None:
    from clusterduck.protocol import (
        Acks,
        Anchor,
        Grant,
        RestartNotice,
        acks_frame,
        grant_frame,
        pack_anchor,
        restart_frame,
    )
    from clusterduck.runtime.inbound import check_reply

    g, r = guard()
    frames = [*data("numbers/0", PICKLE.dumps([(1, "a")]), 1), pack_anchor(5, (9,))]
    assert same(g.check(N0, frames), "numbers/0", [(1, "a")], 1, Anchor(5, (9,)))
    grant = grant_frame(Grant(1, 3, 0.0))
    assert check_reply([grant], r, acks=False) == Grant(1, 3, 0.0)
    assert check_reply([acks_frame({9: 5})], r, acks=True) == Acks(((9, 5),))
    assert check_reply([restart_frame(7)], r, acks=True) == RestartNotice(7)
    assert r.as_dict() == {}
    # Under at-most-once nothing but grants is accepted on an outbox.
    assert check_reply([acks_frame({9: 5})], r, acks=False) is None
    assert check_reply([b"A1"], r, acks=True) is None
    assert check_reply([grant, grant], r, acks=True) is None
    assert r.as_dict() == {GRANT: 3}


def test_msgpack_and_json_batches_pass() -> None:
    for name in ("msgpack", "json"):
        codec = get_codec(name)
        g = InboundGuard("w", EXPECTED, codec.decode, Rejections("w", log=Lines()))
        got = g.check(N0, data("numbers/0", codec.dumps([(1, "a"), (2, [3])]), 2))
        assert same(got, "numbers/0", [(1, "a"), (2, [3])], 2)
        got = g.check(N0, data("numbers/0", codec.dumps([(5, "a"), (2, [3])]), 4))
        assert same(got, "numbers/0", [(5, "a"), (2, [3])], 4)


def test_each_kind_of_bad_frame_is_rejected_and_counted() -> None:
    g, r = guard()
    pairs = PICKLE.dumps([(1, 1)])
    dropped = [  # nothing comes out
        ([], FRAME_COUNT),
        ([b"Dnumbers/0", b"x", pack_count(1), b"y"], ANCHOR),  # at-least-once part
        ([b"Dnumbers/0", b"x", pack_count(1), b"y" * 8, b"z"], FRAME_COUNT),
        ([b"Dnumbers/0"], FRAME_COUNT),
        ([b"Dnumbers/0", pairs], FRAME_COUNT),
        ([b"Enumbers/0", b"payload"], FRAME_COUNT),
        ([b"Pnumbers/0"], FRAME_COUNT),
        ([b""], HEADER),
        ([b"Xnumbers/0", b"x", pack_count(1)], HEADER),
        ([b"E\xff\xfe"], HEADER),  # the frame that killed a worker (issue 10)
        ([b"Enumbers/x"], HEADER),
        ([b"Dnumbers/0", pairs, b"short"], COUNT),
        ([b"Pnumbers/0", (-1).to_bytes(8, "little", signed=True)], COUNT),
        ([b"Enumbers/7"], SENDER),  # no such instance
        (data("other/0", pairs, 1), SENDER),
    ]
    for frames, kind in dropped:
        before = r.counts[kind]
        assert g.check(N0 if frames[:1] != [b"Enumbers/7"] else None, frames) is None, frames
        assert r.counts[kind] == before + 1, (frames, kind)
    # a data frame from an expected sender whose payload is bad: its credit goes back
    answered = [
        (data("numbers/0", b"\x80\x05not a pickle", 1), UNDECODABLE),
        (data("numbers/0", pickle.dumps([1, 2, 3]), 3), SHAPE),  # not [ids, values]
        (data("numbers/0", pickle.dumps([(1, 1), (2, 2)]), 3), SHAPE),  # pairs
        (data("numbers/0", pickle.dumps((1, [2])), 3), SHAPE),  # a tuple
        (data("numbers/0", pickle.dumps([1, (2,)]), 3), SHAPE),  # values not a list
        (data("numbers/0", pickle.dumps([["1"], [2]]), 3), SHAPE),  # a str id
        (data("numbers/0", pickle.dumps([[True], [2]]), 3), SHAPE),  # a bool id
        (data("numbers/0", pickle.dumps([True, [2]]), 3), SHAPE),  # a bool first id
        (data("numbers/0", pickle.dumps([1.0, [2]]), 3), SHAPE),  # a float first id
        (data("numbers/0", pickle.dumps([[1, 2], [2]]), 3), SHAPE),  # more ids than values
        (data("numbers/0", pickle.dumps([[1], [2, 3]]), 3), SHAPE),  # fewer
        (data("numbers/0", pickle.dumps({"a": 1}), 3), SHAPE),
        (data("numbers/0", PICKLE.dumps([(1, 1), (2, 2)]), 1), SHAPE),  # more than its count
    ]
    for frames, kind in answered:
        before = r.counts[kind]
        assert g.check(N0, frames) == Probe("numbers/0", int.from_bytes(frames[2], "little"))
        assert r.counts[kind] == before + 1, (frames, kind)
    assert sum(r.counts.values()) == len(dropped) + len(answered)


def test_the_connection_must_be_the_claimed_sender() -> None:
    g, r = guard()
    assert g.check(b"numbers/1", [eos_header("numbers", 0)]) is None
    assert g.check(b"\x00\x8bE\x12", [eos_header("numbers", 0)]) is None  # ROUTER's own id
    assert r.counts[SENDER] == 2
    assert g.check(N0, [eos_header("numbers", 0)], peer="numbers/1") is None
    assert r.counts[PEER] == 1
    assert g.check(b"numbers/1", [eos_header("numbers", 1)], peer="numbers/1") == EndOfStream(
        "numbers/1"
    )


def test_oversized_frame_is_rejected_before_decoding() -> None:
    decoded: list[bytes] = []

    def loads(payload: bytes) -> Any:
        decoded.append(payload)
        return [1, [1]]

    r = Rejections("w", log=Lines())
    g = InboundGuard("w", EXPECTED, loads, r, max_frame=10)
    assert g.check(N0, data("numbers/0", b"x" * 11, 4)) == Probe("numbers/0", 4)
    assert r.counts[OVERSIZED] == 1 and decoded == []
    assert same(g.check(N0, data("numbers/0", b"x" * 10, 4)), "numbers/0", [(1, 1)], 4)


def test_a_payload_is_decoded_once_even_when_it_is_rejected() -> None:
    # The fast path decodes; a payload it cannot use is rejected there, not decoded
    # again by the full check (with pickle, decoding runs the sender's code).
    decoded: list[bytes] = []

    def loads(payload: bytes) -> Any:
        decoded.append(payload)
        if payload == b"junk":
            raise ValueError("not a batch")
        return {"not": "columns"}

    r = Rejections("w", log=Lines())
    g = InboundGuard("w", EXPECTED, loads, r)
    assert g.check(N0, data("numbers/0", b"junk", 4)) == Probe("numbers/0", 4)
    assert g.check(N0, data("numbers/0", b"shape", 4)) == Probe("numbers/0", 4)
    assert decoded == [b"junk", b"shape"]
    assert r.counts[UNDECODABLE] == 1 and r.counts[SHAPE] == 1


def test_a_one_part_data_frame_passes_and_its_faults_are_counted() -> None:
    """Small frames travel in one part (protocol.data_part): checked like three parts,
    and each way to get one wrong is counted under the kind three parts would be."""
    g, r = guard()
    batch = [(7, "a"), (8, "b")]
    payload = PICKLE.dumps(batch)
    assert same(
        g.check(N0 + b"@tok", data("numbers/0", payload, 9, one_part=True)), "numbers/0", batch, 9
    )
    assert same(
        g._check(b"numbers/1", data("numbers/1", payload, 2, one_part=True), None),
        "numbers/1",
        batch,
        2,
    )
    assert r.as_dict() == {}
    header = data_header("numbers", 0)
    cases = [
        (N0, [raw_part(data_header("numbers", 9), 2, payload)], SENDER),
        (b"numbers/1", [raw_part(header, 2, payload)], SENDER),
        (N0, [raw_part(header, 2, payload), b"more"], FRAME_COUNT),
        (N0, [raw_part(header, 2, b"", length=200)], HEADER),
        (N0, [b"d\x01\x02"], HEADER),
        (N0, [raw_part(b"Dnumbers", 2, payload)], HEADER),
        (N0, [raw_part(header, -1, payload)], COUNT),
        (N0, [raw_part(header, 2, b"junk")], UNDECODABLE),
        (N0, [raw_part(header, 1, payload)], SHAPE),  # two messages within a count of 1
    ]
    for identity, frames, kind in cases:
        before = r.counts[kind]
        got = g.check(identity, frames)
        assert r.counts[kind] == before + 1, (frames, kind, r.as_dict())
        assert got is None or isinstance(got, Probe)
    assert g.check(N0, [raw_part(header, 2, payload)], peer="numbers/1") is None
    assert r.counts[PEER] == 1


def test_grants_are_checked_and_the_rest_counted() -> None:
    r = Rejections("spout", log=Lines())
    good = Grant(3, 10, 0.001)
    assert check_grant([grant_frame(good)], r) == good
    for frames in ([], [b"G"], [grant_frame(good), b"x"], [b"X" + grant_frame(good)[1:]],
                   [grant_frame(Grant(3, 10, 0.0))[:-1]]):  # fmt: skip
        assert check_grant(frames, r) is None
    assert r.as_dict() == {GRANT: 5}


def test_log_lines_are_rate_limited_per_kind() -> None:
    clock, lines = FakeClock(), Lines()
    g, r = guard(clock=clock, log=lines, log_interval=10.0)
    for _ in range(100):
        g.check(N0, [b"E\xff"])
        g.check(N0, [b"Enope/0"])
    assert len(lines.lines) == 2  # one per kind
    clock.now += 10.0
    g.check(N0, [b"E\xff"])
    assert len(lines.lines) == 3 and "+99 more" in lines.lines[-1]
    assert r.counts[HEADER] == 101 and r.counts[SENDER] == 100


# ---------------------------------------------------------------------- properties

_pickles = st.one_of(
    st.integers(), st.text(), st.lists(st.integers()), st.tuples(st.integers(), st.integers()),
    st.lists(st.tuples(st.text(), st.integers())), st.dictionaries(st.text(), st.integers()),
    st.lists(st.lists(st.integers(), max_size=3)), st.none(),
    st.lists(st.tuples(st.integers(), st.integers()), max_size=3),
    st.tuples(st.integers(), st.lists(st.integers(), max_size=3)).map(list),
    st.tuples(st.lists(st.integers(), max_size=3), st.lists(st.integers(), max_size=3)).map(list),
    st.tuples(st.lists(st.one_of(st.integers(), st.text(), st.booleans()), max_size=3),
              st.lists(st.integers(), max_size=3)).map(list),
).map(pickle.dumps)  # fmt: skip
_headers = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"D", b"E", b"P", b"G"]).flatmap(
        lambda k: st.sampled_from(["numbers/0", "numbers/9", "x/0", ""]).map(
            lambda s: k + s.encode()
        )
    ),
)
_counts = st.one_of(st.integers(0, 2**62).map(pack_count), st.binary(max_size=9))
_frames = st.one_of(
    st.lists(st.one_of(_headers, _pickles, _counts, st.binary(max_size=64)), max_size=4),
    st.tuples(_headers, st.integers(-2, 2**62), _pickles).map(
        lambda t: [raw_part(t[0], t[1], t[2])]
    ),
    st.binary(max_size=24).map(lambda b: [b"d" + b]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([None, N0, b"numbers/1", b"x"]), _frames), max_size=12))
def test_any_frames_are_either_checked_or_counted_never_raised(
    messages: list[tuple[bytes | None, list[bytes]]],
) -> None:
    g, r = guard()
    passed = 0
    for identity, frames in messages:
        before = sum(r.counts.values())
        got = g.check(identity, frames)
        counted = sum(r.counts.values()) - before
        assert counted in (0, 1)
        if got is None:
            assert counted == 1
            continue
        assert got.sender in EXPECTED
        assert identity is None or identity == got.sender.encode()
        passed += 1 - counted  # a counted data frame comes back as a probe
        if isinstance(got, DataBatch):
            assert all(type(seq) is int for seq, _ in got.batch)
            assert len(got.seqs) == len(got.values) <= got.total
    assert passed + sum(r.counts.values()) == len(messages)
    assert set(r.counts) <= set(REJECT_KINDS)


_batches = st.one_of(
    st.tuples(st.integers(0, 5), st.lists(st.integers(), max_size=5)).map(list),
    st.tuples(st.lists(st.integers(), max_size=5), st.lists(st.integers(), max_size=5)).map(list),
).map(pickle.dumps)
_data_headers = st.sampled_from(["numbers/0", "numbers/1", "numbers/9", "x/0"]).map(
    lambda s: b"D" + s.encode()
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([None, N0, b"numbers/1", N0 + b"@tok", b"numbers/1@x@y", b"x"]),
    st.one_of(
        st.lists(st.one_of(_data_headers, _pickles, _counts, st.binary(max_size=16)), max_size=4),
        st.tuples(
            _data_headers,
            st.one_of(_pickles, _batches),
            st.one_of(st.integers(0, 8).map(pack_count), _counts),
        ).map(list),
        st.tuples(
            _data_headers, st.integers(-2, 8), st.one_of(_pickles, _batches), st.booleans()
        ).map(lambda t: [raw_part(t[0], t[1], t[2], length=None if t[3] else 200)]),
        st.binary(max_size=24).map(lambda b: [b"d" + b]),
    ),
    st.sampled_from([None, "numbers/0", "numbers/1"]),
    st.booleans(),
)
# One-part frames right in every way but one, which random draws combine rarely: a
# negative total, a payload over max_frame (each is a check the fast path must make).
@example(N0, [raw_part(b"Dnumbers/0", -1, pickle.dumps([[0], [5]]))], "numbers/0", False)
@example(None, [raw_part(b"Dnumbers/0", -1, pickle.dumps([[0], [5]]))], None, False)
@example(N0, [raw_part(b"Dnumbers/0", 1, pickle.dumps([[0], [5]]))], "numbers/0", True)
def test_the_fast_path_decides_as_the_full_check_does(
    identity: bytes | None, frames: list[bytes], peer: str | None, small: bool
) -> None:
    """``check`` takes a shortcut for data frames; whatever the frames, it returns what
    the full check returns and counts the same rejections."""
    kw = {"max_frame": 8} if small else {}
    g1, r1 = guard(**kw)
    g2, r2 = guard(**kw)
    got, want = g1.check(identity, frames, peer), g2._check(identity, frames, peer)
    assert type(got) is type(want)
    if isinstance(want, DataBatch):
        assert isinstance(got, DataBatch)
        assert (got.sender, list(got.seqs), got.values, got.total, got.anchor) == (
            want.sender,
            list(want.seqs),
            want.values,
            want.total,
            want.anchor,
        )
    else:
        assert got == want
    assert r1.as_dict() == r2.as_dict()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(), st.text(max_size=5)), max_size=20),
    st.sampled_from(sorted(EXPECTED)),
    st.integers(0, 1000),
)
def test_well_formed_frames_from_expected_senders_always_pass(
    batch: list[tuple[int, str]], sender: str, before: int
) -> None:
    g, r = guard()
    total = before + len(batch)
    ident = sender.encode()
    for one_part in (False, True):
        frames = data(sender, PICKLE.dumps(batch), total, one_part=one_part)
        assert same(g.check(ident, frames), sender, batch, total)
    comp, _, index = sender.partition("/")
    assert g.check(ident, [eos_header(comp, int(index))], peer=sender) == EndOfStream(sender)
    assert r.as_dict() == {}


# ---------------------------------------------------------------------- control messages


def test_control_guard_decodes_requests_and_counts_the_rest() -> None:
    r = Rejections("supervisor", log=Lines())
    g = ControlGuard(r, max_frame=100)
    parse = ControlRequest.from_dict
    assert g.decode([b"id", b"", b'{"op": "status"}'], parse, min_frames=3) == ControlRequest(
        Op.STATUS
    )
    assert g.decode([b'{"op": "start"}'], parse) == ControlRequest(Op.START)
    bad = [
        ([b"id", b""], CONTROL_FRAME_COUNT),
        ([b"id", b"", b"", b"", b"{}"], CONTROL_FRAME_COUNT),
        ([b"id", b"", b"\xff\xfe not json"], CONTROL_UNDECODABLE),  # crashed the supervisor
        ([b"id", b"", b"{" * 101], CONTROL_OVERSIZED),
        ([b"id", b"", b"[1, 2]"], CONTROL_UNDECODABLE),
        ([b"id", b"", b'{"op": 3}'], CONTROL_SHAPE),
        ([b"id", b"", b'{"op": "wire"}'], CONTROL_SHAPE),  # no endpoints
    ]
    for frames, kind in bad:
        before = r.counts[kind]
        assert g.decode(frames, parse, min_frames=3) is None, frames
        assert r.counts[kind] == before + 1, kind
    assert sum(r.counts.values()) == len(bad)


def test_control_guard_dispatch_turns_a_shape_error_into_a_count() -> None:
    r = Rejections("supervisor", log=Lines())
    g = ControlGuard(r)
    seen: list[str] = []

    def handler(msg: dict[str, Any]) -> None:
        seen.append(msg["endpoints"]["relay/0"])  # KeyError on a message without them

    g.dispatch(handler, {"op": "hello"})
    g.dispatch(handler, {"op": "hello", "endpoints": {"relay/0": "ipc://x"}})
    assert seen == ["ipc://x"] and r.as_dict() == {CONTROL_SHAPE: 1}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=0, max_size=4))
def test_control_guard_never_raises(frames: list[bytes]) -> None:
    r = Rejections("p", log=Lines())
    msg = ControlGuard(r).decode(frames, ControlRequest.from_dict, min_frames=2)
    assert msg is None or isinstance(msg, ControlRequest)
    assert (msg is None) == (sum(r.counts.values()) == 1)

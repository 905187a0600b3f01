"""One turn of the worker loop, without sockets: the transport is passed in, so a fake
one stands where ZeroMQ would (the real thing runs in tests/test_runtime_processes.py).
Inbox frames arrive as a ROUTER delivers them: the sender's identity first."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from clusterduck.protocol import (
    ComponentSpec,
    Frame,
    Grant,
    ProcessSpec,
    TopologySpec,
    data_header,
    eos_header,
    pack_count,
    parse_grant,
    read_frame,
)
from clusterduck.runtime import process
from clusterduck.runtime.codec import get_codec
from clusterduck.runtime.component import WorkerLogic
from clusterduck.runtime.gate import InputGate
from clusterduck.runtime.outbox import Outbox, Output
from clusterduck.runtime.process import ComponentProcess
from clusterduck.runtime.routing import Route

CODEC = get_codec("pickle")


def payload(frames: Sequence[bytes]) -> Any:
    """The decoded payload of a data frame sent downstream (one part or three)."""
    frame = read_frame(frames)
    assert isinstance(frame, Frame), frame
    return CODEC.loads(frame.payload)


class FakeSocket:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.port: int | None = None
        self.inbox: deque[list[bytes]] = deque()
        self.sent: list[list[bytes]] = []
        self.peer: str | None = None  # the User-Id of the last message (CURVE only)

    def send(self, frames: Sequence[bytes], *, block: bool = True) -> bool:
        self.sent.append([bytes(f) for f in frames])
        return True

    def recv(self, *, block: bool = True, check: bool = True) -> list[bytes] | None:
        return self.inbox.popleft() if self.inbox else None

    def has_input(self) -> bool:
        return bool(self.inbox)

    def send_json(self, obj: Any, *, prefix: Sequence[bytes] = ()) -> None:
        self.sent.append([*prefix, json.dumps(obj).encode()])


class FakeTransport:
    def dealer(self, endpoint: str, identity: str | None = None) -> FakeSocket:
        return FakeSocket(endpoint)

    def poll(
        self, readers: Iterable[FakeSocket], writers: Iterable[FakeSocket] = (), timeout: Any = None
    ) -> tuple[set[FakeSocket], set[FakeSocket]]:
        return {s for s in readers if s.inbox}, set(writers)

    def wait(self, readers: Iterable[FakeSocket], timeout: Any = None) -> list[FakeSocket]:
        return [s for s in readers if s.inbox]


def make_process(*, measured: bool = True) -> tuple[ComponentProcess, FakeSocket, FakeSocket]:
    topo = TopologySpec(
        "t",
        (
            ComponentSpec("src", "spout", "m:src"),
            ComponentSpec("double", "worker", "m:double", inputs=("src",)),
            ComponentSpec("sink", "worker", "m:sink", inputs=("double",)),
        ),
    )
    spec = ProcessSpec(topo, "double", 0, "localhost", ".", "127.0.0.1", "127.0.0.1", "ctl")
    proc = ComponentProcess(spec, FakeTransport())  # type: ignore[arg-type]
    inbox, downstream = FakeSocket("in"), FakeSocket("out")
    proc.add_inbox(inbox, "src")  # type: ignore[arg-type]
    proc.outbox = Outbox(
        [Output(Route("sink", 1, "shuffle"), [downstream])],
        CODEC,
        data_header("double", 0),
        eos_header("double", 0),
        lambda seq, exc: None,
    )
    # As if both had run a while: the sink granted (credit before: one message), and the
    # worker measured itself (before, its first slice is one message: Intake.slices).
    proc.outbox.outputs[0].ledger.grant(0, Grant(0, 1000, 0.0))
    assert proc.intake is not None
    if measured:
        proc.intake.grantor.record(1, 1e-6)
    return proc, inbox, downstream


def test_one_step_reads_calls_and_sends() -> None:
    proc, inbox, downstream = make_process()
    logic = WorkerLogic(proc.component, lambda v: 2 * v, metrics=proc.metrics)
    senders = {"src": {"src/0"}}
    open_inputs = {"src"}
    inbox.inbox.append(
        [b"src/0", data_header("src", 0), CODEC.dumps([(0, 1), (1, 2)]), pack_count(2)]
    )
    proc.worker_step(logic, InputGate(senders), senders, open_inputs)
    (frames,) = downstream.sent
    assert len(frames) == 1  # a small frame: one part (protocol.data_part)
    frame = read_frame(frames)
    assert isinstance(frame, Frame) and frame.sender == "double/0" and frame.total == 2
    assert [tuple(p) for p in payload(frames)] == [(0, 2), (1, 4)]
    assert proc.metrics.received == 2


def test_frames_already_waiting_leave_together_and_their_credit_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that is behind (the next frame waits already) frames the results of both
    in one frame downstream; holding them is not being blocked, so its sender still
    hears from it at once (a blocked worker would owe the grant instead)."""
    # However slow this machine is now: the hold's time limit is not what is tested.
    monkeypatch.setattr(process, "HOLD_SECONDS", 60.0)
    proc, inbox, downstream = make_process()
    logic = WorkerLogic(proc.component, lambda v: 2 * v, metrics=proc.metrics)
    senders = {"src": {"src/0"}}
    open_inputs = {"src"}
    for seq in range(2):
        inbox.inbox.append(
            [b"src/0", data_header("src", 0), CODEC.dumps([(seq, seq)]), pack_count(seq + 1)]
        )
    proc.worker_step(logic, InputGate(senders), senders, open_inputs)
    (frames,) = downstream.sent
    assert [tuple(p) for p in payload(frames)] == [(0, 0), (1, 2)]
    grants = [parse_grant(f[1]) for f in inbox.sent if f[0] == b"src/0"]
    assert grants and grants[0] is not None and grants[0].processed >= 1
    assert not proc._owed


def test_results_are_held_for_company_no_longer_than_hold_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past HOLD_SECONDS since the last flush, a frame's results leave on their own even
    though the next frame waits (here the limit is 0: no hold at all)."""
    monkeypatch.setattr(process, "HOLD_SECONDS", 0.0)
    proc, inbox, downstream = make_process()
    logic = WorkerLogic(proc.component, lambda v: 2 * v, metrics=proc.metrics)
    senders = {"src": {"src/0"}}
    for seq in range(2):
        inbox.inbox.append(
            [b"src/0", data_header("src", 0), CODEC.dumps([(seq, seq)]), pack_count(seq + 1)]
        )
    proc.worker_step(logic, InputGate(senders), senders, {"src"})
    assert [[tuple(p) for p in payload(f)] for f in downstream.sent] == [
        [(0, 0)],
        [(1, 2)],
    ]


def test_frames_of_hold_batch_messages_or_more_are_held_up_to_slice_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HOLD_SECONDS is for small frames only: a frame of HOLD_BATCH messages or more (a
    flood) still waits up to SLICE_SECONDS for the next one's company."""
    monkeypatch.setattr(process, "HOLD_SECONDS", 0.0)
    monkeypatch.setattr(process, "HOLD_BATCH", 2)
    monkeypatch.setattr(process, "SLICE_SECONDS", 60.0)
    proc, inbox, downstream = make_process()
    logic = WorkerLogic(proc.component, lambda v: 2 * v, metrics=proc.metrics)
    senders = {"src": {"src/0"}}
    for first in (0, 2):
        batch = [(first, first), (first + 1, first + 1)]
        inbox.inbox.append(
            [b"src/0", data_header("src", 0), CODEC.dumps(batch), pack_count(first + 2)]
        )
    proc.worker_step(logic, InputGate(senders), senders, {"src"})
    assert [[tuple(p) for p in payload(f)] for f in downstream.sent] == [
        [(0, 0), (1, 2), (2, 4), (3, 6)]
    ]


def test_end_of_stream_closes_the_input_and_bad_frames_are_counted() -> None:
    proc, inbox, downstream = make_process()
    logic = WorkerLogic(proc.component, lambda v: v)
    senders = {"src": {"src/0"}}
    open_inputs = {"src"}
    inbox.inbox.append([b"src/0", b"garbage"])
    inbox.inbox.append([b"src/0", data_header("src", 0), b"not a pickle", pack_count(1)])
    inbox.inbox.append([b"src/0", eos_header("src", 0)])
    proc.worker_step(logic, InputGate(senders), senders, open_inputs)
    assert open_inputs == set() and proc.ended == {"src/0"}
    assert proc.rejections.as_dict() == {"header": 1, "undecodable": 1}
    assert downstream.sent == []
    # the undecodable frame's credit went back to its sender all the same
    assert any(f[0] == b"src/0" and f[1][:1] == b"G" for f in inbox.sent)


def test_the_measured_cost_counts_decoding_the_frame() -> None:
    """A consumer whose time goes into decoding (large values) must not look free: credit
    follows the measured cost per message, and without the decode a sink of 1 MiB values
    was granted the most credit there is. Here decoding takes at least 20 ms (a sleep)
    and the call nothing, so the cost measured is at least 20 ms over the frame."""
    proc, inbox, downstream = make_process(measured=False)
    logic = WorkerLogic(proc.component, lambda v: None, metrics=proc.metrics)
    senders = {"src": {"src/0"}}
    guard = proc.guards[inbox]  # type: ignore[index]
    decode = guard.decode

    def slow_decode(data: bytes) -> Any:
        time.sleep(0.02)
        return decode(data)

    guard.decode = slow_decode
    batch = [(seq, seq) for seq in range(10)]
    inbox.inbox.append([b"src/0", data_header("src", 0), CODEC.dumps(batch), pack_count(10)])
    proc.worker_step(logic, InputGate(senders), senders, {"src"})
    assert proc.metrics.received == 10
    assert proc.intake is not None and proc.intake.grantor.cost is not None
    assert proc.intake.grantor.cost >= 0.02 / 10

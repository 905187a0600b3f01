"""How the outbox cuts what waits into frames: by credit, by MAX_BATCH and by bytes.

Frames are large under a flood (fewer sends, receives and grants per message), yet a
frame of large values must stay far below what receivers accept (MAX_FRAME_BYTES: above
it libzmq drops the whole connection). The sockets here record what was sent: the outbox
is a pure object over whatever ``send`` it is given; the last test sends over real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.protocol import ONE_PART_BELOW, Grant, data_header, eos_header
from clusterduck.runtime import outbox as outbox_module
from clusterduck.runtime.codec import get_codec
from clusterduck.runtime.inbound import DataBatch, InboundGuard, Rejections
from clusterduck.runtime.outbox import MAX_BATCH, Outbox, Output
from clusterduck.runtime.routing import Route
from clusterduck.runtime.transport import Transport, generate_curve_keys

CODEC = get_codec("pickle")


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send(self, frames: Sequence[bytes], *, block: bool = True) -> bool:
        self.sent.append([bytes(f) for f in frames])
        return True


def make_outbox(
    sock: RecordingSocket | None = None, *, credit: bool = False
) -> tuple[Outbox, RecordingSocket]:
    """An outbox of ``src/0`` with one output of one instance (a collector's, unless
    ``credit``)."""
    sock = RecordingSocket() if sock is None else sock
    box = Outbox(
        [Output(Route("w" if credit else "(collector)", 1, "all"), [sock], credit=credit)],
        CODEC,
        data_header("src", 0),
        eos_header("src", 0),
        lambda seq, exc: None,
    )
    return box, sock


def test_a_flood_of_small_messages_leaves_in_frames_of_max_batch() -> None:
    box, sock = make_outbox()
    box.emit_columns(range(3 * MAX_BATCH), [(i, "x") for i in range(3 * MAX_BATCH)])
    assert box.flush()
    sizes = [len(CODEC.loads(frames[1])) for frames in sock.sent]
    assert sizes == [MAX_BATCH] * 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=120))
def test_frames_stay_near_frame_bytes_and_keep_every_message_in_order(
    sizes: list[int],
) -> None:
    """Values of any mix of sizes: every frame of more than one message stays under
    twice FRAME_BYTES, and the frames together hold every message once, in order."""
    limit = 4000
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(outbox_module, "FRAME_BYTES", limit)
        box, sock = make_outbox()
        values = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
        box.emit_columns(range(len(values)), values)
        assert box.flush()
    got = []
    for frames in sock.sent:
        batch = CODEC.loads(frames[1])
        assert len(batch) == 1 or len(frames[1]) <= 2 * limit
        got.extend(batch)
    assert got == list(enumerate(values))


def test_large_values_are_framed_a_few_at_a_time() -> None:
    """200 values of 256 KiB: in one frame that would be 50 MiB; with MAX_BATCH values of
    that size per frame, a frame far over what a receiver accepts."""
    box, sock = make_outbox()
    values = [bytes([i % 256]) * (1 << 18) for i in range(200)]  # distinct: no memo
    box.emit_columns(range(200), values)
    assert box.flush()
    assert len(sock.sent) > 1
    assert max(len(frames[1]) for frames in sock.sent) <= 2 * outbox_module.FRAME_BYTES
    assert sum(len(CODEC.loads(frames[1])) for frames in sock.sent) == 200


class QuietSocket(RecordingSocket):
    """A data socket on which no grant ever arrives."""

    def recv(self, *, block: bool = True, check: bool = True) -> list[bytes] | None:
        return None


def test_grants_are_due_when_credit_runs_short_or_after_an_interval() -> None:
    """A spout's pump reads the grant sockets only when ``grants_due`` (each read is two
    system calls in libzmq): when something waits for credit, when an instance holds
    under half its window (its grant is about due), or GRANT_READ_INTERVAL after the
    last read. Never less often: a grant it leaves unread may be one the sleeping I/O
    loop's FD edge no longer signals."""
    box, _ = make_outbox(QuietSocket(), credit=True)
    assert box.read_grants() == 0
    read = box._grants_read
    assert not box.grants_due(read)  # full credit, just read
    # (just past the interval: read + interval - read can round to under the interval)
    assert box.grants_due(read + outbox_module.GRANT_READ_INTERVAL * 1.001)
    window = box.outputs[0].ledger.window(0)
    box.emit_columns(range(window // 2), ["x"] * (window // 2))
    assert box.flush() and not box.grants_due(read)  # half the window left: not yet
    box.emit_columns([window // 2], ["x"])
    assert box.flush() and box.grants_due(read)  # under half: the grant is about due
    box.emit_columns(range(window), ["x"] * window)
    assert not box.flush() and box.grants_due(read)  # waiting for credit


@pytest.mark.parametrize("security", ["ipc", "curve"])
def test_over_real_sockets_small_frames_are_one_part_and_the_inbox_takes_both_kinds(
    security: str, tmp_path: Path
) -> None:
    """A frame under ONE_PART_BELOW bytes leaves as one ZeroMQ part (a send and a
    receive instead of three each), a larger one as header, payload and count; the
    receiver's guard accepts both from the sender the connection (and with CURVE, its
    key) belongs to. Fails with three parts for every frame (the inbox then reads four)."""
    keys = generate_curve_keys(["src/0", "w/0"]) if security == "curve" else None
    ipc = str(tmp_path) if security == "ipc" else None
    inbound = Transport(keys.for_instance("w/0") if keys else None, ipc_dir=ipc, me="w/0")
    outbound = Transport(keys.for_instance("src/0") if keys else None, ipc_dir=ipc, me="src/0")
    try:
        inbox = inbound.receiver("127.0.0.1", "127.0.0.1", name="inbox")
        sock = outbound.sender(inbox.endpoint, "src/0", "w/0")
        assert outbound.wait_connected([sock], 10) == []
        box = Outbox(
            [Output(Route("w", 1, "all"), [sock])],
            CODEC,
            data_header("src", 0),
            eos_header("src", 0),
            lambda seq, exc: None,
        )
        box.outputs[0].ledger.grant(0, Grant(0, 100, 0.0))  # as the receiver would have
        guard = InboundGuard("w/0 <- src", ["src/0"], CODEC.decode, Rejections("w/0"))
        big = "x" * ONE_PART_BELOW
        got = []
        for seqs, values in ((range(2), ["a", "b"]), (range(2, 3), [big])):
            box.emit_columns(seqs, values)
            assert box.flush()
            assert inbox.raw.poll(10_000)
            frames = inbox.recv(block=False)
            assert frames is not None
            got.append(len(frames))
            item = guard.check(frames[0], frames[1:], inbox.peer)
            assert isinstance(item, DataBatch)
            assert (list(item.seqs), item.values, item.total) == (list(seqs), values, seqs[-1] + 1)
        assert got == [2, 4]  # the ROUTER's identity, then one part; or three
        assert guard.rejections.as_dict() == {}
    finally:
        inbound.close(linger_ms=0)
        outbound.close(linger_ms=0)

"""The at-least-once ledger (runtime/ledger.py, runtime/pending.py, runtime/cursor.py,
the outbox's Anchoring in runtime/guarantee.py) and its frames (protocol.py): pure
objects driven through random frame splits, slices and ack arrival orders."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.protocol import (
    Acks,
    Anchor,
    RestartNotice,
    acks_frame,
    grant_frame,
    pack_anchor,
    parse_anchor,
    parse_reply,
    read_frame,
    restart_frame,
)
from clusterduck.runtime.cursor import SavedCursor
from clusterduck.runtime.guarantee import Anchoring
from clusterduck.runtime.ledger import AckTracker, new_edge_id, spout_of
from clusterduck.runtime.pending import PendingWindow


def unpack_acks(data: bytes) -> tuple[tuple[int, int], ...]:
    reply = parse_reply(data)
    assert isinstance(reply, Acks)
    return reply.pairs


def pack_acks(acks: dict[int, int]) -> bytes:
    return acks_frame(acks)


def cut(n: int, points: list[int]) -> list[int]:
    """Sizes of the pieces of n at these cut points."""
    marks = sorted({p % n for p in points if 0 < p % n} | {0, n}) if n else [0]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[int, list[int], list[int], list[int], int]:
    n = draw(st.integers(1, 60))
    frames = draw(st.lists(st.integers(1, 59), max_size=5))
    slices = draw(st.lists(st.integers(1, 59), max_size=5))
    order = draw(st.permutations(range(64)))
    lost = draw(st.integers(-1, 10))
    return n, frames, slices, list(order), lost


def run_chain(
    n: int, frames: list[int], slices: list[int], order: list[int], lost: int
) -> tuple[PendingWindow, list[int], int]:
    """spout → w1 (plain, slices) → sink; returns the window, the completion step per
    ack delivered (or -1) and how many acks there were."""
    window = PendingWindow(slot=3, timeout=30.0, clock=lambda: 0.0)
    root = window.open([(i, i) for i in range(n)])
    assert spout_of(root) == 3
    w1, sink = AckTracker(), AckTracker()
    acks: list[dict[int, int]] = []
    frame_no = 0
    for size in cut(n, frames):
        edge = new_edge_id()
        window.born(root, edge)
        token = w1.receive(edge, (root,), size)
        for piece in cut(size, slices):
            out_edge = new_edge_id()
            w1.born(out_edge, token.roots)  # the slice's output, framed
            w1.processed(token, piece)
            frame_no += 1
            if frame_no == lost:
                continue  # the sink crashed with this frame: never consumed
            sink_token = sink.receive(out_edge, (root,), piece)
            sink.processed(sink_token, piece)
            acks.extend(a for a in sink.take().values())
        acks.extend(a for a in w1.take().values())
    assert not window.seal()  # nothing acked yet: sealing completes nothing
    steps = []
    for k in sorted(range(len(acks)), key=lambda k: order[k % len(order)] + k * 64):
        done = []
        for r, x in unpack_acks(pack_acks(acks[k])):
            done.extend(window.ack(r, x))
        steps.append(len(done))
    return window, steps, len(acks)


@given(pipelines())
@settings(max_examples=300, deadline=None)
def test_a_batch_completes_exactly_when_its_last_ack_arrives(case: tuple) -> None:
    n, frames, slices, order, _ = case
    window, steps, _ = run_chain(n, frames, slices, order, lost=-1)
    assert steps[-1] == n and not any(steps[:-1])
    assert len(window) == 0 and window.acked == n and window.messages == 0


@given(pipelines())
@settings(max_examples=300, deadline=None)
def test_a_frame_lost_in_a_crash_keeps_its_batch_pending(case: tuple) -> None:
    n, frames, slices, order, lost = case
    lost = max(1, lost)
    window, steps, _ = run_chain(n, frames, slices, order, lost)
    frames_made = sum(len(cut(size, slices)) for size in cut(n, frames))
    if lost <= frames_made:
        assert not any(steps) and len(window) == 1
        batch = window.replay_all()[0]
        assert [seq for seq, _ in batch] == list(range(n))


@given(st.lists(st.integers(0, 20), min_size=1, max_size=40))
def test_a_bundled_worker_acks_a_part_only_once_its_id_left(seqs: list[int]) -> None:
    tracker = AckTracker(holds=True)
    token = tracker.receive(77, (5,), len(seqs))
    tracker.hold(token, seqs)
    ids = sorted(set(seqs))
    for seq in ids[:-1]:
        tracker.release([seq])
        assert tracker.take() == {}  # the frame still has a message inside
    tracker.release(ids[-1:])
    assert tracker.take() == {0: {5: 77}}


def test_a_sequential_worker_acks_only_durable_ids() -> None:
    tracker = AckTracker(holds=True, gated=True)
    a = tracker.receive(11, (1,), 1)
    b = tracker.receive(22, (1,), 1)
    tracker.hold(a, [0])
    tracker.hold(b, [1])
    tracker.release([0])
    tracker.release([1])
    assert tracker.take() == {}
    tracker.durable(1)  # id 0 is saved, id 1 not yet
    assert tracker.take() == {0: {1: 11}}
    tracker.durable(2)
    assert tracker.take() == {0: {1: 22}}


def test_the_anchor_and_replies_round_trip_and_garbage_is_refused() -> None:
    assert parse_anchor(pack_anchor(9, (1, 2))) == Anchor(9, (1, 2))
    assert parse_anchor(b"abc") is None and parse_anchor(b"") is None
    assert parse_reply(b"A" + b"x" * 15) is None
    assert parse_reply(b"A") is None  # no pairs
    assert parse_reply(restart_frame(4242)) == RestartNotice(4242)
    assert parse_reply(b"R123") is None
    assert unpack_acks(acks_frame({1: 2, 3: -4})) == ((1, 2), (3, -4))


@given(st.binary(max_size=200))
def test_parsing_replies_and_anchors_never_raises(data: bytes) -> None:
    parse_reply(data)
    parse_anchor(data)
    read_frame([b"Dids/0", b"", b"\x01" + b"\x00" * 7, data])


def test_a_data_frame_with_an_anchor_is_read_with_it_and_a_bad_one_rejected() -> None:
    count = (3).to_bytes(8, "little")
    frame = read_frame([b"Dids/0", b"payload", count, pack_anchor(7, (1 << 40,))])
    assert not isinstance(frame, str) and frame.anchor == Anchor(7, (1 << 40,))
    assert read_frame([b"Dids/0", b"payload", count, b"bad"]) == "anchor"
    # A grant is still a grant on the way back.
    from clusterduck.protocol import Grant

    assert parse_reply(grant_frame(Grant(1, 5, 0.0))) == Grant(1, 5, 0.0)


def test_anchoring_names_the_roots_of_exactly_the_messages_framed() -> None:
    born: list[tuple[int, tuple[int, ...]]] = []
    anchoring = Anchoring(lambda edge, roots: born.append((edge, roots)), count=True)
    queue: deque[int] = deque()
    for roots, n in (((1,), 3), ((2,), 2), ((2,), 1), ((3,), 4)):
        anchoring.current = roots
        anchoring.queued(queue, n)
    assert anchoring.unframed == {1: 3, 2: 3, 3: 4}
    anchor, data = anchoring.anchor(queue, 4)  # 3 of root 1, 1 of root 2
    assert set(anchor.roots) == {1, 2} and parse_anchor(data) == anchor
    anchoring.framed(queue, 4, anchor)
    assert born == [(anchor.edge, anchor.roots)]
    assert anchoring.unframed == {2: 2, 3: 4}
    anchoring.framed(queue, 2, None)  # dropped (encoding failed): nothing born
    assert len(born) == 1 and anchoring.unframed == {3: 4}
    anchor, _ = anchoring.anchor(queue, 4)
    assert anchor.roots == (3,)


def test_expired_batches_are_replayed_and_late_acks_ignored() -> None:
    now = [0.0]
    window = PendingWindow(slot=0, timeout=30.0, clock=lambda: now[0])
    root = window.open([(1, "a"), (2, "b")])
    window.born(root, 5)
    window.seal()
    assert window.next_deadline() == 30.0 and window.expired() == []
    now[0] = 31.0
    assert window.expired() == [[(1, "a"), (2, "b")]]
    assert window.ack(root, 5) == []  # the old tree's ack names a root no longer kept
    assert window.done_below(3) == 3


def test_done_below_is_the_lowest_pending_id() -> None:
    window = PendingWindow(slot=0, timeout=30.0, clock=lambda: 0.0)
    window.open([(5, None), (6, None)])
    window.open([(7, None)])
    assert window.done_below(8) == 5


def test_the_cursor_is_saved_by_its_thread_atomically_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "state" / "w.0.cursor"
    cursor = SavedCursor(path)
    assert cursor.load() is None and not cursor.pending()
    for value in range(1, 200):
        cursor.request(value)  # no I/O here: the saver thread catches up
    deadline = time.monotonic() + 30
    while cursor.pending() and time.monotonic() < deadline:
        time.sleep(0.005)  # polling the saver thread, with a deadline
    assert not cursor.pending() and cursor.saved == 199
    assert SavedCursor(path).load() == 199
    cursor.save(150)  # never goes back
    assert SavedCursor(path).load() == 199 and not cursor.pending()
    cursor.save(250)
    assert SavedCursor(path).load() == 250
    # A write torn by a crash breaks only the slot being written: the other one holds
    # the previous value.
    data = bytearray(path.read_bytes())
    gens = [int.from_bytes(data[i + 8 : i + 16], "little") for i in (0, 32)]
    newest = 0 if gens[0] > gens[1] else 32
    data[newest + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert SavedCursor(path).load() == 199  # the slot before: 250 was torn
    path.write_text("garbage")
    assert SavedCursor(path).load() is None


def test_a_sequential_worker_acks_a_slice_once_its_cursor_passed_it_durably() -> None:
    tracker = AckTracker(holds=True, gated=True)
    a = tracker.receive(11, (1,), 4)
    b = tracker.receive(22, (2,), 2)
    tracker.hold_below(a, 5, 2)  # ids 4, 5 of frame a
    tracker.hold_below(b, 7, 2)  # ids 6, 7: frame b whole
    tracker.hold_below(a, 9, 2)  # ids 8, 9: the rest of frame a
    assert set(tracker.roots_waiting(6)) == {1, 2} and tracker.roots_waiting(10) == ()
    tracker.durable(6)  # ids up to 5 are saved: frame a still has 8, 9 inside
    assert tracker.take() == {}
    tracker.durable(8)
    assert tracker.take() == {0: {2: 22}}
    tracker.durable(10)
    assert tracker.take() == {0: {1: 11}} and tracker.held() == 0


def test_a_root_is_sealed_only_once_its_own_messages_are_framed() -> None:
    window = PendingWindow(slot=0, timeout=30.0, clock=lambda: 0.0)
    first = window.open([(0, "a")])
    second = window.open([(1, "b")])
    assert window.seal(framing={second}) == [(0, "a")]  # nothing born: done at once
    window.born(second, 9)
    assert window.seal() == []  # framed now, but its frame is not acked yet
    assert window.ack(second, 9) == [(1, "b")]
    assert first != second and len(window) == 0


def test_held_parts_are_given_up_oldest_first_and_released_ones_forgotten() -> None:
    tracker = AckTracker(holds=True)
    token = tracker.receive(5, (1,), 3)
    tracker.hold(token, [10, 11, 12])
    tracker.release([11])  # its bundle completed
    assert tracker.expire_held(time.monotonic() - 60) == []  # none that old
    assert tracker.expire_held(time.monotonic() + 1) == [10, 12]
    tracker.release([10, 12])
    assert tracker.take() == {0: {1: 5}} and tracker.held() == 0

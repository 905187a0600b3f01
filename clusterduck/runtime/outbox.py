"""Everything one process sends downstream: routing, framing, credit, EOS.

A batch handed to ``emit`` is split per route (docs/reference.md §1) and waits, per downstream
instance (or, for ``shuffle``, for any instance), until that instance has credit
(runtime/credit.py). ``flush`` frames and sends as much as the credit allows, never
blocking: a frame holds at most ``min(free credit, MAX_BATCH)`` messages (and about
``FRAME_BYTES``), so a trickle goes out message by message and a flood in large frames.
``shuffle`` picks the instance with credit and the least work queued
(``CreditLedger.choose``). While anything waits the caller reads no input — that is how
back-pressure travels upstream, and why memory stays bounded to one batch's output. The
frames themselves are laid out in :mod:`clusterduck.protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import (
    ONE_PART_BELOW,
    Acks,
    Batch,
    EdgeStatus,
    Grant,
    RestartNotice,
    data_part,
    pack_count,
)
from .chunks import ChunkQueue
from .codec import Codec
from .credit import PROBE_INTERVAL, CreditLedger
from .inbound import Rejections, check_reply
from .routing import OnError, Route

if TYPE_CHECKING:
    from .guarantee import Anchoring

__all__ = ["MAX_BATCH", "Outbox", "Output"]

# Frames carry at most this many messages (fewer when the receiver grants less). Large:
# under a flood every frame costs each process a send, a receive, a grant and wake-ups of
# ZeroMQ's I/O threads, which cost more than the messages once frames are a few hundred;
# a slow consumer's credit keeps its frames small whatever this is.
MAX_BATCH = 4000
# A sender that reads grants only when it needs them (``Outbox.grants_due``) reads them
# at least this often anyway: the receiver's window and cost change with its speed.
GRANT_READ_INTERVAL = 0.01
# ... and about this many bytes of payload at most (the last frame's bytes per message
# sizes the next one), so large values still travel in frames far below the receivers'
# MAX_FRAME_BYTES (a frame above it costs the whole connection) and memory stays bounded.
FRAME_BYTES = 8 * 1024 * 1024


@dataclass
class Output:
    """One downstream component: its route, one socket per instance, their credit.

    ``credit`` False: a peer that grants nothing (the test collector's PULL)."""

    route: Route
    sockets: Sequence[Any]  # transport.Socket
    credit: bool = True
    ledger: CreditLedger = field(init=False)
    # Messages waiting for credit: per instance, and (shuffle) for any instance.
    waiting: list[ChunkQueue] = field(init=False)
    any: ChunkQueue = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = CreditLedger(len(self.sockets), unlimited=not self.credit)
        self.waiting = [ChunkQueue() for _ in self.sockets]
        self.any = ChunkQueue()

    def backlog(self) -> int:
        return len(self.any) + sum(map(len, self.waiting))


class Outbox:
    def __init__(
        self,
        outputs: list[Output],
        codec: Codec,
        header: bytes,
        eos: bytes,
        on_error: OnError,
        probe: bytes = b"P",
        rejections: Rejections | None = None,
    ) -> None:
        self.outputs = outputs
        # Anything received that is not a grant is counted here (runtime/inbound.py).
        self.rejections = rejections or Rejections("outbox")
        self.codec = codec
        self.header = header
        self.eos = eos
        self.probe = probe
        # A message that cannot be routed (its key raised) or encoded is dropped and
        # reported here, with its seq id, like an error in the user's function.
        self.on_error = on_error
        self.queued_messages = 0
        self._fit = MAX_BATCH  # messages of the last frame's size that fill FRAME_BYTES
        self._full: set[Any] = set()  # sockets whose ZeroMQ queue refused a frame
        self._probe_at = 0.0  # when flush looks for instances to probe next
        # (output, instance) -> when we last asked it how far it got (ask_progress)
        self._asked: dict[tuple[int, int], float] = {}
        self._grants_read = 0.0  # when read_grants last ran (grants_due)
        # at-least-once (runtime/guarantee.py): anchors for every frame, and what to do
        # with the acks and restart notices receivers send back. None: at-most-once.
        self.anchors: Anchoring | None = None
        self.on_reply: Callable[[Acks | RestartNotice], None] | None = None
        # Where emit_columns queues a batch whole, per output; None: some output cuts
        # batches by message (seq, key), which needs pairs.
        self._whole: list[list[ChunkQueue]] | None = None
        if not any(out.route.splits for out in outputs):
            self._whole = [[out.any] if out.route.shuffles else out.waiting for out in outputs]

    @property
    def pending(self) -> bool:
        return self.queued_messages > 0

    def emit(self, batch: Batch) -> None:
        if not batch or not self.outputs:
            return
        anchors = self.anchors
        for out in self.outputs:
            parts = out.route.split(batch, self.on_error)
            if parts is None:
                out.any.extend(batch)
                self.queued_messages += len(batch)
                if anchors is not None:
                    anchors.queued(out.any, len(batch))
            else:
                for index, part in parts.items():
                    out.waiting[index].extend(part)
                    self.queued_messages += len(part)
                    if anchors is not None:
                        anchors.queued(out.waiting[index], len(part))

    def emit_columns(self, seqs: Sequence[int], values: list[Any]) -> None:
        """``emit`` for a batch given as its two columns (a worker's results): queued as
        they are, without a pair or a queue entry per message (runtime/chunks.py)."""
        whole = self._whole
        if whole is None:
            self.emit(list(zip(seqs, values, strict=True)))
            return
        n = len(values)
        if not n:
            return
        anchors = self.anchors
        for queues in whole:
            for queue in queues:
                queue.extend_columns(seqs, values)
                self.queued_messages += n
                if anchors is not None:
                    anchors.queued(queue, n)

    def _encode(self, seqs: Sequence[int], values: list[Any]) -> tuple[bytes, int]:
        """The whole batch in one call; if that fails, find and drop the bad messages."""
        dumps = self.codec.dumps_columns
        try:
            return dumps(seqs, values), len(values)
        except Exception:  # noqa: BLE001 - isolate below, message by message
            good_ids, good = [], []
            for seq, value in zip(seqs, values, strict=True):
                try:
                    dumps([seq], [value])
                except Exception as exc:  # noqa: BLE001
                    self.on_error(seq, exc)
                else:
                    good_ids.append(seq)
                    good.append(value)
            return (dumps(good_ids, good) if good else b""), len(good)

    def _send(self, out: Output, i: int, queue: ChunkQueue) -> bool:
        """One frame from ``queue`` to instance ``i``, as large as its credit allows."""
        sock = out.sockets[i]
        if sock in self._full:
            return False
        led = out.ledger
        if led.holds_back(i, len(queue)):
            return False  # low on credit, a grant on its way: no ever smaller frames
        n = min(len(queue), led.free(i), self._fit)
        if n <= 0:
            return False
        seqs, values = queue.take(n)
        payload, good = self._encode(seqs, values)
        size = len(payload)
        if good:
            self._fit = min(MAX_BATCH, max(1, FRAME_BYTES * good // size)) if size else MAX_BATCH
            if size > 2 * FRAME_BYTES and good == n > 1:
                # Far larger values than the last frame's: frame fewer of them (the
                # flush loop comes back at once with the new size).
                queue.put_back(seqs, values)
                return True
        anchors = self.anchors
        anchor = None
        if good:
            total = led.sent[i] + good
            # A small frame travels as one part (protocol.data_part): each part is a send
            # and a receive of its own in libzmq. Not to the test collector (a PULL that
            # reads three parts) nor with an anchor (at-least-once: a fourth part).
            one = None
            if size < ONE_PART_BELOW and out.credit and anchors is None:
                one = data_part(self.header, total, payload)
            frame: tuple[bytes, ...] = (one,) if one else (self.header, payload, pack_count(total))
            if anchors is not None and out.credit:
                anchor, data = anchors.anchor(queue, n)
                frame = (*frame, data)
            if not sock.send(frame, block=False):
                queue.put_back(seqs, values)  # ZeroMQ's own queue is full: later
                self._full.add(sock)
                return False
            led.take(i, good)
        if anchors is not None:
            anchors.framed(queue, n, anchor)
        self.queued_messages -= n
        return True

    def flush(self) -> bool:
        """Send what credit allows now; True when nothing is left waiting."""
        self._full.clear()
        for out in self.outputs:
            for i, queue in enumerate(out.waiting):
                while queue and self._send(out, i, queue):
                    pass
            while out.any:
                order = out.route.shuffle_order()
                if self._full:  # an instance whose socket is full cannot take it now
                    order = [i for i in order if out.sockets[i] not in self._full]
                chosen = out.ledger.choose(order, len(out.any))
                if chosen is None or not self._send(out, chosen, out.any):
                    break
                out.route.took(chosen)
        # Probes are due PROBE_INTERVAL apart at the earliest: looking a few times per
        # interval is enough, and looking on every flush cost a trickle a few microseconds
        # per message.
        now = time.monotonic()
        if now >= self._probe_at:
            self._probe_at = now + PROBE_INTERVAL / 8
            for out in self.outputs:
                if out.credit:
                    self._probe(out)
        return self.queued_messages == 0

    def _probe(self, out: Output) -> None:
        """Ask an instance without credit, or silent with messages of ours, again now and
        then (it may have restarted)."""
        led = out.ledger
        for i, sock in enumerate(out.sockets):
            if (out.waiting[i] or out.any or led.in_flight(i)) and led.probe_due(i):
                sock.send((self.probe, pack_count(led.sent[i])), block=False)

    def ask_progress(self, now: float) -> None:
        """Probe every instance that holds messages of ours, once per grant (again after
        PROBE_INTERVAL): for a spout held by ``max_pending`` with nothing waiting here.
        A receiver skips grants while its sender holds over half its credit, so without
        asking, a spout could wait for news of messages already processed, forever."""
        for o, out in enumerate(self.outputs):
            if not out.credit:
                continue
            led = out.ledger
            for i, sock in enumerate(out.sockets):
                if not led.in_flight(i):
                    continue
                asked = self._asked.get((o, i))
                if asked is not None and now - asked < PROBE_INTERVAL:
                    continue
                self._asked[(o, i)] = now
                sock.send((self.probe, pack_count(led.sent[i])), block=False)

    def read_grants(self, only: Any = None) -> int:
        """Apply every grant that arrived (never blocks); returns how many. Anything
        that is not a well-formed grant (or, at-least-once, acks) is counted and dropped.
        ``only``: read that socket only (a wait said something came on it)."""
        got = 0
        on_reply = self.on_reply
        if only is None:
            self._grants_read = time.monotonic()
        for o, out in enumerate(self.outputs):
            if not out.credit:
                continue
            for i, sock in enumerate(out.sockets):
                if only is not None and sock is not only:
                    continue
                while (frames := sock.recv(block=False)) is not None:
                    reply = check_reply(frames, self.rejections, acks=on_reply is not None)
                    if isinstance(reply, Grant):
                        out.ledger.grant(i, reply)
                        self._asked.pop((o, i), None)
                        got += 1
                    elif reply is not None and on_reply is not None:
                        on_reply(reply)
        return got

    def grants_due(self, now: float) -> bool:
        """Whether a sender that reads grants only when it needs them (a spout's pump:
        reading a socket costs two system calls in libzmq, as much as a quarter of what
        sending one message takes) should read them now: something waits for credit,
        some instance left us under half its window (its receiver grants about then), or
        they were not read for ``GRANT_READ_INTERVAL``."""
        if self.queued_messages or now - self._grants_read >= GRANT_READ_INTERVAL:
            return True
        return any(out.ledger.short() for out in self.outputs if out.credit)

    def grant_sockets(self) -> list[Any]:
        """The sockets grants arrive on (to poll for input)."""
        return [s for out in self.outputs if out.credit for s in out.sockets]

    def blocked_sockets(self) -> list[Any]:
        """Sockets whose ZeroMQ queue was full at the last flush (to poll for room)."""
        return list(self._full)

    def in_flight(self) -> int:
        return sum(out.ledger.total_in_flight() for out in self.outputs)

    def unprocessed(self) -> int:
        """Messages emitted that some next component has not processed yet (the output
        furthest behind counts: with two outputs a message is in both)."""
        return max(
            (out.ledger.total_in_flight() + out.backlog() for out in self.outputs),
            default=0,
        )

    def window(self) -> int:
        """Messages this process may have in flight now, all outputs together."""
        return min((out.ledger.total_window() for out in self.outputs), default=MAX_BATCH)

    def edges(self) -> tuple[EdgeStatus, ...]:
        """Per downstream instance: credit, in flight and estimated queue time (status)."""
        rows = []
        for out in self.outputs:
            if not out.credit:
                continue
            led = out.ledger
            for i in range(led.instances):
                rows.append(
                    EdgeStatus(
                        to=f"{out.route.component}/{i}",
                        credit=led.free(i),
                        in_flight=led.in_flight(i),
                        waiting=len(out.waiting[i]),
                        queue_ms=round(led.queue_seconds(i) * 1000, 1),
                    )
                )
        return tuple(rows)

    def send_eos(self, wait: Callable[[], None]) -> None:
        """End of stream on every socket, after everything waiting (blocking)."""
        while not self.flush():
            wait()
            self.read_grants()
        for out in self.outputs:
            for sock in out.sockets:
                while not sock.send((self.eos,), block=False):
                    wait()

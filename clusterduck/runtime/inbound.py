"""The inbound guard: every frame is untrusted until it is decoded and checked here.

A worker's inbox (a ROUTER) may receive anything a peer with access to its socket
sends: a wrong number of frames, a header that is not ours, a malformed running count,
bytes that do not decode, a pickle of the wrong shape, a frame far too large, a header
claiming to be an upstream instance that does not exist. A sender's outbox (a DEALER)
may receive anything its receiver's socket sends back instead of a grant. The layout of
every frame is :mod:`clusterduck.protocol`'s (``read_frame``, ``parse_grant``); this
module decides what to *accept*: ``InboundGuard.check`` turns raw frames into a
``DataBatch``, a ``Probe`` or an ``EndOfStream`` from one of the *expected* senders, or
``None``: the frame is dropped, counted by kind in a shared :class:`Rejections`
(``status`` shows them as ``rejected_frames``), and logged at most once per kind per
``LOG_INTERVAL`` so a flood cannot fill the disk.

A data frame from an expected sender whose payload is rejected (oversized, undecodable,
wrongly shaped) comes back as a ``Probe`` at its running total: its sender still gets
the credit back, so a bad frame costs a stream nothing but itself.

Pure (no sockets, injected clock and log function), tested with hypothesis. Decoding
still runs the codec: for pickle, loading is executing, which is why *who may connect*
(transport: ipc in a private directory, or CURVE) is the real protection; the guard is
what keeps a process alive and its stream exact whatever a peer with access sends.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ..exceptions import ProtocolError
from ..protocol import (
    BAD_ANCHOR,
    BAD_COUNT,
    BAD_FRAME_COUNT,
    BAD_HEADER,
    Acks,
    Anchor,
    Batch,
    Frame,
    Grant,
    RestartNotice,
    batch_columns,
    decode_json,
    parse_grant,
    parse_reply,
    read_frame,
    split_data_part,
)

__all__ = [
    "CONTROL_KINDS",
    "LOG_INTERVAL",
    "MAX_CONTROL_BYTES",
    "MAX_FRAME_BYTES",
    "REJECT_KINDS",
    "ControlGuard",
    "DataBatch",
    "EndOfStream",
    "InboundGuard",
    "Probe",
    "Rejections",
    "check_grant",
    "check_reply",
]

# A data payload larger than this is dropped (and counted as "oversized"): 256 MiB. It
# bounds what one frame may make a process decode; a sender frames about FRAME_BYTES
# (runtime/outbox.py, 8 MiB) at most, so only a single message over 256 MiB reaches it.
MAX_FRAME_BYTES = 256 * 1024 * 1024
# One log line per kind of rejection per this many seconds, with the count since.
LOG_INTERVAL = 10.0

# Every kind of rejected data-path frame, as counted and shown by ``status``.
FRAME_COUNT = BAD_FRAME_COUNT  # not 3 (or 1) frames for data, 2 for a probe, 1 for EOS
HEADER = BAD_HEADER  # empty, unknown kind letter, not UTF-8, not component/index
COUNT = BAD_COUNT  # the running total is not a non-negative int64
SENDER = "sender"  # names no instance of this inbox's input, or not the connection's
PEER = "peer"  # with CURVE: the authenticated identity is not the claimed sender
OVERSIZED = "oversized"  # above MAX_FRAME_BYTES
UNDECODABLE = "undecodable"  # the codec raised
SHAPE = "shape"  # decoded, but not [ids, values] (runtime/codec.py)
GRANT = "grant"  # on an outbox: not a well-formed credit grant (or, at-least-once, acks)
ANCHOR = BAD_ANCHOR  # at-least-once: a data frame's anchor is not edge + roots
REJECT_KINDS = (
    FRAME_COUNT, HEADER, COUNT, SENDER, PEER, OVERSIZED, UNDECODABLE, SHAPE, GRANT, ANCHOR
)  # fmt: skip
# Control messages (JSON) rejected by ControlGuard.
CONTROL_FRAME_COUNT = "control_frame_count"
CONTROL_OVERSIZED = "control_oversized"
CONTROL_UNDECODABLE = "control_undecodable"
CONTROL_SHAPE = "control_shape"
CONTROL_KINDS = (CONTROL_FRAME_COUNT, CONTROL_OVERSIZED, CONTROL_UNDECODABLE, CONTROL_SHAPE)
# A control message above this is dropped: 16 MiB (a `wire` with every endpoint of a
# large topology is a few hundred KiB).
MAX_CONTROL_BYTES = 16 * 1024 * 1024

LogFn = Callable[..., None]
T = TypeVar("T")


class DataBatch(NamedTuple):
    """A checked data frame: its messages as two columns (runtime/codec.py), ids as a
    ``range`` when consecutive, and the sender's running count. (A named tuple: one is
    made per frame, and a frozen dataclass costs three times as much to build.)"""

    sender: str
    seqs: Sequence[int]
    values: list[Any]
    total: int  # the sender's running count, this frame included
    anchor: Anchor | None = None  # at-least-once: the frame's edge id and roots

    @property
    def batch(self) -> Batch:
        """The messages as ``(seq_id, value)`` pairs."""
        return list(zip(self.seqs, self.values, strict=True))


@dataclass(frozen=True)
class Probe:
    """Grant ``sender`` credit up to ``total`` (a probe, or a data frame we dropped)."""

    sender: str
    total: int


@dataclass(frozen=True)
class EndOfStream:
    sender: str


class Rejections:
    """Counts of dropped input by kind, logged once per kind per interval (a flood of bad
    frames must cost neither the disk nor the CPU of formatting a line for each)."""

    def __init__(
        self,
        where: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = LOG_INTERVAL,
        log: LogFn | None = None,
    ) -> None:
        self.where = where
        self.clock = clock
        self.log_interval = log_interval
        self.log = log or logging.getLogger("clusterduck.inbound").warning
        self.counts: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        now = self.clock()
        last = self._last_log.get(kind)
        if last is not None and now - last < self.log_interval:
            self._unlogged[kind] += 1
            return
        self._last_log[kind] = now
        since = self._unlogged.pop(kind, 0)
        more = f" (+{since} more since the last line)" if since else ""
        self.log("%s: dropped a frame (%s): %s%s", self.where, kind, detail, more)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class InboundGuard:
    """Checks the frames of one inbox; ``expected`` are the instances that may send."""

    def __init__(
        self,
        where: str,
        expected: Collection[str],
        decode: Callable[[bytes], Any],
        rejections: Rejections,
        *,
        max_frame: int = MAX_FRAME_BYTES,
    ) -> None:
        self.where = where
        self.expected = frozenset(expected)
        self.decode = decode  # a codec's decode (runtime/codec.py): bytes to anything
        self.rejections = rejections
        self.max_frame = max_frame
        # The data header of every expected sender -> (sender, its name as bytes): the
        # fast path of ``check`` for the frames that make up a flood.
        self._data = {b"D" + s.encode(): (s, s.encode()) for s in self.expected}
        # ... and of a one-part data frame (protocol.data_part), by the sender's name.
        self._names = {s.encode(): (s, s.encode()) for s in self.expected}

    def check(
        self, identity: bytes | None, frames: Sequence[bytes], peer: str | None = None
    ) -> DataBatch | Probe | EndOfStream | None:
        """The checked content of one message (``frames`` without the ROUTER's
        ``identity``), or None: dropped and counted.

        ``identity`` is the connection's ROUTER identity (each sender's DEALER names
        itself ``component/index@token``; None on a PULL); ``peer`` is the connection's
        authenticated instance name (the ZAP ``User-Id`` with CURVE, whose keys are per
        instance), None when there is none (ipc, ``security: none``).

        A well-formed data frame from an expected sender is accepted on a fast path (a
        dict lookup of its header instead of parsing it: per frame, that parsing cost as
        much as decoding a hundred small messages); anything else, or anything the fast
        path doubts, takes the full path below, which decides and counts."""
        if len(frames) == 1 and type(part := frames[0]) is bytes and part[:1] == b"d":
            split = split_data_part(part)
            known = None if split is None else self._names.get(split[0])
            if (
                known is not None
                and split is not None
                and (identity is None or (identity.rpartition(b"@")[0] or identity) == known[1])
                and (peer is None or peer == known[0])
                and len(split[2]) <= self.max_frame
                and split[1] >= 0
            ):
                return self._decoded(known[0], split[2], split[1], None)
        elif len(frames) == 3 and type(head := frames[0]) is bytes:
            known = self._data.get(head)
            count, payload = frames[2], frames[1]
            if (
                known is not None
                and len(count) == 8
                and (identity is None or (identity.rpartition(b"@")[0] or identity) == known[1])
                and (peer is None or peer == known[0])
                and len(payload) <= self.max_frame
            ):
                total = int.from_bytes(count, "little", signed=True)
                if total >= 0:  # the payload is decoded once, here or in the full path
                    return self._decoded(known[0], payload, total, None)
        return self._check(identity, frames, peer)

    def _check(
        self, identity: bytes | None, frames: Sequence[bytes], peer: str | None
    ) -> DataBatch | Probe | EndOfStream | None:
        """``check``'s full path: every kind of frame, every reason to drop one."""
        frame = read_frame(frames)
        if not isinstance(frame, Frame):
            head = bytes(frames[0][:40]) if frames else b""
            self._reject(frame, f"{len(frames)} frames, first {head!r}")
            return None
        sender = frame.sender
        if sender not in self.expected:
            self._reject(SENDER, f"sender {sender[:80]!r} is not an upstream instance")
            return None
        # A sender's DEALER is named ``component/index@token`` (runtime/transport.py).
        if identity is not None and (identity.rpartition(b"@")[0] or identity) != sender.encode():
            self._reject(SENDER, f"connection {bytes(identity[:80])!r} claimed {sender!r}")
            return None
        if peer is not None and peer != sender:
            self._reject(PEER, f"connection of {peer[:80]!r} claimed to be {sender!r}")
            return None
        if frame.header.eos:
            return EndOfStream(sender)
        if frame.header.probe:
            return Probe(sender, frame.total)
        payload = frame.payload
        if len(payload) > self.max_frame:
            self._reject(
                OVERSIZED, f"{len(payload):,} bytes from {sender} (limit {self.max_frame:,})"
            )
            return Probe(sender, frame.total)
        return self._decoded(sender, payload, frame.total, frame.anchor)

    def _decoded(
        self, sender: str, payload: bytes, total: int, anchor: Anchor | None
    ) -> DataBatch | Probe:
        """The batch a checked sender's payload holds; a Probe (its count still moves
        on) when it does not decode to int seq ids and values within that count."""
        try:
            decoded = self.decode(payload)
        except Exception as exc:  # noqa: BLE001 - any codec failure is the peer's fault
            self._reject(UNDECODABLE, f"from {sender}: {type(exc).__name__}: {exc}"[:300])
            return Probe(sender, total)
        cols = batch_columns(decoded)
        if cols is None or len(cols[1]) > total:
            self._reject(
                SHAPE,
                f"from {sender}: a {type(decoded).__name__}, not int seq ids and values "
                "within its running count",
            )
            return Probe(sender, total)
        return DataBatch(sender, cols[0], cols[1], total, anchor)

    def _reject(self, kind: str, detail: str) -> None:
        self.rejections.add(kind, detail)


def check_grant(frames: Sequence[bytes], rejections: Rejections) -> Grant | None:
    """A credit grant received on an outbox, or None (dropped and counted)."""
    grant = parse_grant(bytes(frames[0])) if len(frames) == 1 else None
    if grant is None:
        head = bytes(frames[0][:40]) if frames else b""
        rejections.add(GRANT, f"{len(frames)} frames, first {head!r}")
    return grant


def check_reply(
    frames: Sequence[bytes], rejections: Rejections, *, acks: bool
) -> Grant | Acks | RestartNotice | None:
    """What a receiver sent back on an outbox: a grant, or (``acks``: at-least-once)
    acks and restart notices; None for anything else (dropped and counted)."""
    reply = parse_reply(bytes(frames[0])) if len(frames) == 1 else None
    if reply is None or (not acks and not isinstance(reply, Grant)):
        head = bytes(frames[0][:40]) if frames else b""
        rejections.add(GRANT, f"{len(frames)} frames, first {head!r}")
        return None
    return reply


class ControlGuard:
    """The one place control messages are decoded: a supervisor's or a process's control
    socket may receive anything a peer with access sends, and must never die of it.

    ``decode`` gives the typed message of the last frame (or None, counted); ``dispatch``
    runs a handler and turns the errors a wrongly shaped message raises there into a
    counted rejection instead of a crash."""

    def __init__(self, rejections: Rejections, *, max_frame: int = MAX_CONTROL_BYTES) -> None:
        self.rejections = rejections
        self.max_frame = max_frame

    def decode(
        self,
        frames: Sequence[bytes],
        parse: Callable[[Mapping[str, Any]], T],
        *,
        min_frames: int = 1,
        max_frames: int | None = None,
    ) -> T | None:
        if not min_frames <= len(frames) <= (max_frames or min_frames + 1):
            self.rejections.add(CONTROL_FRAME_COUNT, f"{len(frames)} frames")
            return None
        data = frames[-1]
        if len(data) > self.max_frame:
            self.rejections.add(CONTROL_OVERSIZED, f"{len(data):,} bytes")
            return None
        try:
            raw = decode_json(data)
        except ProtocolError as exc:
            self.rejections.add(CONTROL_UNDECODABLE, str(exc)[:300])
            return None
        try:
            return parse(raw)
        except (ProtocolError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.rejections.add(CONTROL_SHAPE, f"{type(exc).__name__}: {exc}"[:300])
            return None

    def dispatch(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except (ProtocolError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.rejections.add(CONTROL_SHAPE, f"{type(exc).__name__}: {exc}"[:300])

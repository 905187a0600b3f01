"""Everything one process sends downstream: routing, framing, back-pressure, EOS.

A batch handed to ``emit`` is split per route (SPEC §1), encoded once per distinct
sub-batch, and queued as frames. ``flush`` pushes frames without blocking; what a full
peer refuses stays queued and the caller polls ``blocked_sockets()`` for room. While
anything is queued the caller reads no input — that is how back-pressure travels
upstream, and why memory stays bounded to one batch's output.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol import Batch, data_header, eos_header
from .codec import Codec
from .routing import OnError, Route

__all__ = ["MAX_BATCH", "Outbox", "Output", "data_header", "eos_header"]

# Frames carry at most this many messages: floods travel in large frames, and a shuffle
# route still spreads work over its instances.
MAX_BATCH = 1000


@dataclass
class Output:
    """One downstream component: its route and one socket per instance."""

    route: Route
    sockets: Sequence[Any]  # transport.Socket


class Outbox:
    def __init__(
        self,
        outputs: list[Output],
        codec: Codec,
        header: bytes,
        eos: bytes,
        on_error: OnError,
    ) -> None:
        self.outputs = outputs
        self.codec = codec
        self.header = header
        self.eos = eos
        # A message that cannot be routed (its key raised) or encoded is dropped and
        # reported here, with its seq id, like an error in the user's function.
        self.on_error = on_error
        # Queued frames: (output, instance index or None for "any instance", payload, count)
        self._queue: deque[tuple[Output, int | None, bytes, int]] = deque()
        self.queued_messages = 0

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def emit(self, batch: Batch) -> None:
        if not batch or not self.outputs:
            return
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH] if len(batch) > MAX_BATCH else batch
            # Encode each distinct list once (broadcast and "all" reuse it). The list is
            # kept in the cache so its id cannot be reused while the cache lives.
            encoded: dict[int, tuple[Batch, bytes, int]] = {}
            for out in self.outputs:
                parts = out.route.split(chunk, self.on_error)
                targets = [(None, chunk)] if parts is None else list(parts.items())
                for index, part in targets:
                    cached = encoded.get(id(part))
                    if cached is None:
                        cached = encoded[id(part)] = (part, *self._encode(part))
                    _, payload, count = cached
                    if count:
                        self._queue.append((out, index, payload, count))
                        self.queued_messages += count

    def _encode(self, part: Batch) -> tuple[bytes, int]:
        """The whole batch in one call; if that fails, find and drop the bad messages."""
        try:
            return self.codec.dumps(part), len(part)
        except Exception:  # noqa: BLE001 - isolate below, message by message
            good = []
            for item in part:
                try:
                    self.codec.dumps([item])
                except Exception as exc:  # noqa: BLE001
                    self.on_error(item[0], exc)
                else:
                    good.append(item)
            return (self.codec.dumps(good) if good else b""), len(good)

    def flush(self) -> bool:
        """Send what peers accept now; True when nothing is left queued."""
        queue = self._queue
        while queue:
            out, index, payload, count = queue[0]
            frames = (self.header, payload)
            if index is not None:
                if not out.sockets[index].send(frames, block=False):
                    return False
            elif not self._send_any(out, frames):
                return False
            queue.popleft()
            self.queued_messages -= count
        return True

    def _send_any(self, out: Output, frames: tuple[bytes, bytes]) -> bool:
        """Shuffle: the next instance in turn that has room takes the frame."""
        for i in out.route.shuffle_order():
            if out.sockets[i].send(frames, block=False):
                out.route.took(i)
                return True
        return False

    def blocked_sockets(self) -> list[Any]:
        """The sockets whose room would let the head of the queue move."""
        if not self._queue:
            return []
        out, index, _, _ = self._queue[0]
        return [out.sockets[index]] if index is not None else list(out.sockets)

    def send_eos(self, wait: Callable[[list[Any]], None]) -> None:
        """End of stream on every socket, after everything queued (blocking)."""
        while not self.flush():
            wait(self.blocked_sockets())
        for out in self.outputs:
            for sock in out.sockets:
                while not sock.send((self.eos,), block=False):
                    wait([sock])

"""Counters every process keeps, reported to its supervisor and shown by ``status``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..protocol import EdgeStatus, GapStatus, InstanceReport, Op, State

__all__ = ["Metrics"]


@dataclass
class Metrics:
    received: int = 0
    emitted: int = 0
    errors: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.time)
    # Seconds spent waiting on a full downstream (back-pressure), for status.
    blocked_seconds: float = 0.0
    _rate_mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))
    rate: float = 0.0

    def update_rate(self) -> None:
        """Messages per second processed (received, or emitted for spouts) since last call."""
        now = time.monotonic()
        then, count = self._rate_mark
        total = self.received or self.emitted
        if now - then >= 0.5:
            self.rate = (total - count) / (now - then)
            self._rate_mark = (now, total)

    def report(
        self,
        op: Op,
        *,
        pid: int,
        state: State,
        ended: tuple[str, ...],
        backlog: int,
        anomalies: Mapping[str, int],
        in_flight: int = 0,
        edges: tuple[EdgeStatus, ...] = (),
        cost_ms: float = 0.0,
        rejected_frames: Mapping[str, int] | None = None,
        pending: int = 0,
        replayed: int = 0,
        gap: GapStatus | None = None,
    ) -> InstanceReport:
        """What a process tells its supervisor now (see ``protocol.InstanceReport``)."""
        self.update_rate()
        return InstanceReport(
            op,
            pid,
            state=state,
            ended=ended,
            received=self.received,
            emitted=self.emitted,
            errors=self.errors,
            last_error=self.last_error,
            rate=round(self.rate, 1),
            uptime=round(time.time() - self.started, 1),
            blocked_seconds=round(self.blocked_seconds, 2),
            backlog=backlog,
            anomalies=anomalies,
            in_flight=in_flight,
            cost_ms=cost_ms,
            edges=edges,
            rejected_frames=dict(rejected_frames or {}),
            pending=pending,
            replayed=replayed,
            gap=gap,
        )

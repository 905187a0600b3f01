"""What an instance counted in its earlier incarnations (pure; no sockets).

A restarted process counts from zero. Its supervisor keeps the last report of each
incarnation that crashed and adds it to what the new one reports, so ``status``, the
final status, ``down``'s totals and ``/metrics`` go on from what the crashed process
last reported (it reports every half second: what it counted after its last report, or
before its first, is not carried). Gauges (backlog, rate, in flight,
cost per message, uptime) describe the running process and are not carried.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..protocol import InstanceReport, InstanceStatus

__all__ = ["Carried"]


def _merged(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for kind, n in b.items():
        out[kind] = out.get(kind, 0) + n
    return out


class Carried:
    """The summed counters of an instance's ended incarnations. (A plain class, like
    the supervisor's Instance: cheap to define at every supervisor start.)"""

    __slots__ = (
        "anomalies",
        "blocked_seconds",
        "emitted",
        "errors",
        "received",
        "rejected_frames",
        "replayed",
    )

    def __init__(self) -> None:
        self.received = 0
        self.emitted = 0
        self.errors = 0
        self.replayed = 0
        self.blocked_seconds = 0.0
        self.anomalies: dict[str, int] = {}
        self.rejected_frames: dict[str, int] = {}

    def add(self, report: InstanceReport) -> None:
        """Fold in the last report of an incarnation that ended (it counts no more)."""
        self.received += report.received
        self.emitted += report.emitted
        self.errors += report.errors
        self.replayed += report.replayed
        self.blocked_seconds += report.blocked_seconds
        self.anomalies = _merged(self.anomalies, report.anomalies)
        self.rejected_frames = _merged(self.rejected_frames, report.rejected_frames)

    def onto(self, row: InstanceStatus) -> InstanceStatus:
        """``row`` (the current incarnation's counters, or none yet) with these added."""
        if not (self.received or self.emitted or self.errors or self.replayed):
            if not (self.blocked_seconds or self.anomalies or self.rejected_frames):
                return row
        return row.replace(
            received=row.received + self.received,
            emitted=row.emitted + self.emitted,
            errors=row.errors + self.errors,
            replayed=row.replayed + self.replayed,
            blocked_seconds=round(row.blocked_seconds + self.blocked_seconds, 2),
            anomalies=_merged(row.anomalies, self.anomalies),
            rejected_frames=_merged(row.rejected_frames, self.rejected_frames),
        )

"""Rate history and per-edge flow, computed from successive ``status --json`` documents.

A pure object (no I/O, the caller passes the time) so that it is tested on its own. It
keeps a bounded window of samples per component and derives what one status alone
cannot say:

* ``rate``: the sum of the instances' ``rate`` (messages processed per second);
* ``emitted_rate``: messages per second a component sends on each of its out-edges
  (broadcast between components: every downstream gets them all), from the growth of
  ``emitted`` between two samples;
* ``blocked``: the share of the last interval its instances spent waiting on a full
  downstream (``blocked_seconds``) — how hard its consumers push back.

Counters that go down (a restarted instance goes on from its crashed process's last
report, so a few of its counts can be missing) are treated as a fresh start, not as a
negative rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "Sample"]

WINDOW_SECONDS = 300.0
MAX_SAMPLES = 1200  # bounded whatever the polling interval


@dataclass(frozen=True)
class Sample:
    t: float
    rate: float
    emitted_rate: float
    blocked: float


@dataclass
class _Totals:
    t: float
    emitted: int
    blocked_seconds: float


@dataclass
class History:
    window: float = WINDOW_SECONDS
    samples: dict[str, deque[Sample]] = field(default_factory=dict)
    _last: dict[str, _Totals] = field(default_factory=dict)

    def add(self, t: float, status: dict[str, Any]) -> None:
        """Record one status document taken at time ``t`` (seconds, any monotonic clock)."""
        for comp in status.get("components", []):
            rows = comp.get("instances", [])
            name = comp["name"]
            totals = _Totals(
                t,
                sum(int(r.get("emitted") or 0) for r in rows),
                sum(float(r.get("blocked_seconds") or 0.0) for r in rows),
            )
            rate = float(sum(float(r.get("rate") or 0.0) for r in rows))
            before = self._last.get(name)
            emitted_rate = blocked = 0.0
            if before is not None and t > before.t:
                dt = t - before.t
                emitted_rate = max(0, totals.emitted - before.emitted) / dt
                busy = max(0.0, totals.blocked_seconds - before.blocked_seconds)
                blocked = min(1.0, busy / dt / max(1, len(rows)))
            self._last[name] = totals
            queue = self.samples.setdefault(name, deque(maxlen=MAX_SAMPLES))
            queue.append(Sample(t, rate, emitted_rate, blocked))
            while queue and queue[0].t < t - self.window:
                queue.popleft()

    def latest(self, component: str) -> Sample | None:
        queue = self.samples.get(component)
        return queue[-1] if queue else None

    def to_dict(self, now: float) -> dict[str, Any]:
        """Per component: ``[[seconds ago, rate], …]`` oldest first, and the latest
        emitted rate and blocked share (what the graph's edges and nodes show)."""
        out: dict[str, Any] = {}
        for name, queue in self.samples.items():
            last = queue[-1] if queue else None
            out[name] = {
                "rates": [[round(s.t - now, 1), round(s.rate, 1)] for s in queue],
                "emitted_rate": round(last.emitted_rate, 1) if last else 0.0,
                "blocked": round(last.blocked, 3) if last else 0.0,
            }
        return out

"""Counters for the data anomalies the runtime tolerates but never hides.

docs/reference.md §1: every anomaly is counted (shown by ``status``), logged with its seq id, and
bounded in memory. Logging is bounded too: a flood of duplicates must not fill the disk,
so each kind logs its first :data:`LOG_FIRST` occurrences and then one line every
:data:`LOG_EVERY`-th occurrence.
"""

from __future__ import annotations

import logging

__all__ = [
    "BUNDLE_OVERFLOW",
    "DUPLICATE_ID",
    "DUPLICATE_PART",
    "GAP_SKIPPED",
    "INCOMPLETE_BUNDLE",
    "KINDS",
    "LATE_ID",
    "LOG_EVERY",
    "LOG_FIRST",
    "Anomalies",
]

#: Bundler: a second part for an (input, id) already held or already completed; first kept.
DUPLICATE_PART = "duplicate_part"
#: Bundler: a bundle still incomplete at end of stream; dropped.
INCOMPLETE_BUNDLE = "incomplete_bundle"
#: Bundler: a bundle evicted because the memory bound was reached (or a late part of one).
BUNDLE_OVERFLOW = "bundle_overflow"
#: Sequencer: an id older than the cursor; dropped.
LATE_ID = "late_id"
#: Sequencer: an id already waiting; the second copy is dropped.
DUPLICATE_ID = "duplicate_id"
#: Sequencer: missing ids skipped (gap_timeout, memory bound or end of stream); counts ids.
GAP_SKIPPED = "gap_skipped"

KINDS = (DUPLICATE_PART, INCOMPLETE_BUNDLE, BUNDLE_OVERFLOW, LATE_ID, DUPLICATE_ID, GAP_SKIPPED)

#: Every kind logs its first LOG_FIRST occurrences ...
LOG_FIRST = 20
#: ... and after that only every LOG_EVERY-th one.
LOG_EVERY = 1000

logger = logging.getLogger("clusterduck.runtime")


class Anomalies:
    """Counts anomalies per kind and logs them with bounded volume.

    ``count(kind, seq, detail, n)`` adds ``n`` to the counter (``n`` > 1 for e.g. a gap of
    several ids) but is one *occurrence* for logging purposes: the first ``LOG_FIRST``
    occurrences of a kind are logged, then every ``LOG_EVERY``-th.
    """

    __slots__ = ("_counts", "_occurrences", "label")

    def __init__(self, label: str = "") -> None:
        #: Prefix for log lines (e.g. the component instance), so logs say who saw it.
        self.label = label
        self._counts: dict[str, int] = {}
        self._occurrences: dict[str, int] = {}

    def count(self, kind: str, seq: int, detail: str = "", n: int = 1) -> None:
        """Add ``n`` to ``kind`` and log the occurrence if still within the log budget."""
        self._counts[kind] = self._counts.get(kind, 0) + n
        occurrence = self._occurrences.get(kind, 0) + 1
        self._occurrences[kind] = occurrence
        if occurrence <= LOG_FIRST:
            suffix = ""
            if occurrence == LOG_FIRST:
                suffix = f" (further {kind} anomalies are logged only every {LOG_EVERY}th time)"
        elif occurrence % LOG_EVERY == 0:
            suffix = f" ({occurrence}th occurrence; logging every {LOG_EVERY}th)"
        else:
            return
        who = f"{self.label}: " if self.label else ""
        what = f" x{n}" if n != 1 else ""
        text = f" - {detail}" if detail else ""
        logger.warning(
            "%s%s%s at seq %d%s [total %d]%s",
            who,
            kind,
            what,
            seq,
            text,
            self._counts[kind],
            suffix,
        )

    def get(self, kind: str) -> int:
        """The count of one kind (0 if never seen)."""
        return self._counts.get(kind, 0)

    def as_dict(self) -> dict[str, int]:
        """A snapshot copy of the counters, for ``status``."""
        return dict(self._counts)

    def total(self) -> int:
        """Sum over every kind."""
        return sum(self._counts.values())

    def __repr__(self) -> str:
        return f"Anomalies({self._counts!r})"

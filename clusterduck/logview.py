"""Where ``logs -n N`` begins: at the start of a log record, never inside a traceback.

A process's log holds its log records (``2026-01-31 12:00:00,123 ERROR [name] ...``,
runtime/process.py's format; a traceback logged with a record follows its head line) and
whatever its code printed. The last N lines of it may begin among the frames of a
traceback, without the line that says which message failed or even the ``Traceback``
line: :func:`last_records` extends the view upwards to where that record begins (the
record's head line, or the ``Traceback`` line of one printed without a head), looking
at most ``LOOK_BACK`` lines further up. Lines a process printed are records of their
own: a view may begin at any of them that is not inside a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["LOOK_BACK", "last_records", "lines_of", "may_begin"]

#: How many lines above the last N ``logs -n N`` reads to find where the record its
#: first line belongs to begins (a traceback is rarely longer: Python folds repeated
#: frames). A record that began further up is shown from the N-th last line, as ``tail``.
LOOK_BACK = 200

_HEAD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[")
_CHAIN = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


def lines_of(text: str, keepends: bool = False) -> list[str]:
    """``text``'s lines as ``tail`` counts them: split at ``\n`` only. (``splitlines``
    also splits at ``\r``, form feeds and other separators a process may print, in a
    progress line say, and ``logs -n 3`` then showed fragments, fewer lines than asked.)"""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()  # the newline that ends the last line
    return [part + "\n" for part in parts] if keepends else parts


def _traceback_line(line: str) -> str | None:
    """``tb`` for the first line of a traceback, ``group`` for an exception group's (all
    of whose lines are drawn indented, its exceptions' too), else None."""
    if line.startswith("Traceback (most recent call last):"):
        return "tb"
    if line.lstrip(" +|").startswith("Exception Group Traceback (most recent call last):"):
        return "group"
    return None


def may_begin(lines: Sequence[str]) -> list[bool]:
    """For each line, whether a view may begin there: False for the lines of a traceback
    after its first (and for the ``Traceback`` line of a logged record, which belongs to
    the head line above it), and for the lines before the first place known to begin
    something (a record's head, a traceback): above them may be a traceback's start."""
    out: list[bool] = []
    # unknown: nothing seen yet that begins something; head: the line above is a
    # record's head; text: a printed line; tb: inside a traceback's frames; exc: after
    # its exception line; group: inside an exception group's; chain: after "During
    # handling of the above exception".
    state = "unknown"
    for line in lines:
        indented = line[:1] in (" ", "\t")
        if _HEAD.match(line):
            out.append(True)
            state = "head"
        elif kind := _traceback_line(line):
            # Part of the record above after its head or a chain message; else a new one
            # (printed by Python for an exception nothing caught).
            out.append(state not in ("head", "chain"))
            state = kind
        elif state in ("tb", "exc", "group", "chain"):
            if line.strip() in _CHAIN:
                state = "chain"
                out.append(False)
            elif not line.strip() or indented:
                # A frame, a blank line between chained tracebacks; after the exception
                # line, more of its message (or notes): all of one record.
                out.append(False)
            elif state in ("tb", "chain"):
                out.append(False)  # the exception line ends the frames
                state = "exc"
            else:
                out.append(True)  # after the exception: a line of its own
                state = "text"
        else:
            out.append(state != "unknown")
            if state != "unknown":
                state = "text"
    return out


def last_records(lines: Sequence[str], n: int) -> list[str]:
    """The last ``n`` of ``lines`` (the end of a log, with up to ``LOOK_BACK`` lines above
    them), beginning instead at the start of the record the first of them belongs to
    when it is inside a traceback; the plain last ``n`` when that start is not among
    ``lines``."""
    if n <= 0 or not lines:
        return []
    first = max(0, len(lines) - n)
    begins = may_begin(lines)
    at = first
    while at > 0 and not begins[at]:
        at -= 1
    return list(lines[at:] if begins[at] else lines[first:])

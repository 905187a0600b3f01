"""The ``status`` problem line of a worker held up by an id that does not come.

A process reports the id it has waited for (runtime/stall.py: ``gap`` in its report);
only here, with every instance's row at hand, can the line say where the id was
probably lost (an input's instance that crashed and lost messages) and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable

from .protocol import ComponentStatus, InstanceStatus, TopologySpec

__all__ = ["gap_problems"]


def gap_problems(spec: TopologySpec, components: Iterable[ComponentStatus]) -> list[str]:
    """One line per instance that reports a gap *and* has an input whose instance
    crashed (restarts, or messages lost), e.g. ``join/0 has waited 12 s for id 2307
    (its part from square has not come; lost when square/1 crashed?): …``.

    Without a crash upstream a wait is no problem to report: an id is late behind an
    upstream call that takes seconds, a bundle's part was filtered out (a function
    that returned None: documented, dropped at end of stream), and advice to set
    ``gap_timeout`` would then skip ids that were merely late (data loss)."""
    comps = list(components)
    rows = {c.name: c.instances for c in comps}
    lines = []
    for comp in comps:
        for row in comp.instances:
            if row.gap is not None:
                line = _line(spec, row, rows)
                if line is not None:
                    lines.append(line)
    return lines


def _line(
    spec: TopologySpec, row: InstanceStatus, rows: dict[str, tuple[InstanceStatus, ...]]
) -> str | None:
    gap = row.gap
    assert gap is not None
    worker = spec.component(row.component)
    suspects = gap.missing or worker.inputs
    crashed = [
        f"{up.component}/{up.index}"
        for name in suspects
        for up in rows.get(name, ())
        if up.lost or up.restarts
    ]
    if not crashed:
        return None
    what = (
        f"its part from {', '.join(gap.missing)} has not come" if gap.missing else "it has not come"
    )
    where = f"lost when {', '.join(crashed)} crashed?"
    if spec.at_least_once:
        fix = f"at-least-once replays it after message_timeout ({spec.message_timeout:g}s)"
    elif worker.gap_timeout is not None and worker.sequential:
        fix = f"gap_timeout {worker.gap_timeout:g}s skips it; lower it to skip sooner"
    elif worker.sequential:
        fix = (
            "it waits until end of stream; set gap_timeout to skip such gaps, "
            "or guarantee: at-least-once to replay what a crash loses"
        )
    else:
        fix = (
            "the bundle is dropped at end of stream; "
            "guarantee: at-least-once replays what a crash loses"
        )
    return (
        f"{row.component}/{row.index} has waited {gap.seconds:,.0f} s for id {gap.seq} "
        f"({what}; {where}): {fix}"
    )

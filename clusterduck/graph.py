"""Draw a topology's DAG as terminal text, Graphviz dot, or a Mermaid flowchart.

The text drawing is layered by depth (spouts on top, every worker one layer below its
deepest input); edges that skip layers run down through the layers in between, and
the edges between two layers are routed over one horizontal track per target.
"""

from __future__ import annotations

from dataclasses import dataclass

from .topology import Component, Spout, Topology, Worker

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "dot", "mermaid")
_GAP = 3  # columns between two boxes of a layer
# (up, down, left, right) -> box-drawing character
_LINES = {
    (1, 1, 0, 0): "│",
    (0, 0, 1, 1): "─",
    (0, 1, 0, 1): "┌",
    (0, 1, 1, 0): "┐",
    (1, 0, 0, 1): "└",
    (1, 0, 1, 0): "┘",
    (1, 1, 0, 1): "├",
    (1, 1, 1, 0): "┤",
    (0, 1, 1, 1): "┬",
    (1, 0, 1, 1): "┴",
    (1, 1, 1, 1): "┼",
    (1, 0, 0, 0): "│",
    (0, 1, 0, 0): "│",
    (0, 0, 1, 0): "─",
    (0, 0, 0, 1): "─",
}


def render(topology: Topology, fmt: str) -> str:
    """The topology drawn in ``fmt`` (text, dot or mermaid), ending with a newline."""
    if fmt == "text":
        return _text(topology)
    if fmt == "dot":
        return _dot(topology)
    if fmt == "mermaid":
        return _mermaid(topology)
    raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")


def _facts(comp: Component) -> list[str]:
    """What a box says about a component besides its name: kind, flags, hosts."""
    lines = [f"{comp.kind} ×{comp.parallelism}"]
    flags = []
    if isinstance(comp, Worker):
        flags += ["bundle"] if comp.bundle else []
        flags += ["sequential"] if comp.sequential else []
        if comp.grouping != "shuffle" or (comp.parallelism > 1 and not comp.bundle):
            flags.append(f"grouping: {comp.grouping}")
    if flags:
        lines.append(" · ".join(flags))
    lines.append("@ " + ", ".join(comp.host))
    return lines


def _summary(topology: Topology) -> str:
    hosts = topology.hosts_used()
    return (
        f"{topology.name}: {len(topology.components)} components, "
        f"{len(topology.instances())} instances, "
        f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} ({', '.join(hosts)})"
        + _guarantee(topology)
    )


def _guarantee(topology: Topology) -> str:
    """Said only when it is not the default, so at-most-once drawings do not change."""
    settings = topology.settings
    if settings.guarantee == "at-most-once":
        return ""
    return f", {settings.guarantee} (message_timeout {settings.message_timeout:g}s)"


# -- text ---------------------------------------------------------------------------


@dataclass
class _Item:
    """A box in a layer, or a dummy (a stream passing through the layer)."""

    key: str
    lines: list[str]
    width: int
    x: int = 0

    @property
    def port(self) -> int:
        return self.x + self.width // 2


def _layers(topology: Topology) -> tuple[list[list[str]], set[tuple[str, str]]]:
    """Node keys per layer (dummies are '~source~layer') and the edges between layers."""
    depth: dict[str, int] = {}
    for name in topology.topological_order():
        comp = topology.component(name)
        depth[name] = 1 + max((depth[i] for i in getattr(comp, "inputs", [])), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for comp in topology.components:
        layers[depth[comp.name]].append(comp.name)
    edges: set[tuple[str, str]] = set()
    for worker in topology.workers:
        for source in worker.inputs:
            upper = source
            for level in range(depth[source] + 1, depth[worker.name]):
                dummy = f"~{source}~{level}"  # one shared stream per source and layer
                if dummy not in layers[level]:
                    layers[level].append(dummy)
                edges.add((upper, dummy))
                upper = dummy
            edges.add((upper, worker.name))
    for above, layer in zip(layers, layers[1:], strict=False):  # barycentre ordering, top down
        rank = {key: i for i, key in enumerate(above)}
        files = {key: i for i, key in enumerate(layer)}

        def centre(key: str, rank: dict[str, int] = rank, files: dict[str, int] = files) -> float:
            ups = [rank[a] for a, b in edges if b == key and a in rank]
            return (sum(ups) / len(ups) if ups else files[key]) + files[key] * 1e-6

        layer.sort(key=centre)
    return layers, edges


def _text(topology: Topology) -> str:
    layers, edges = _layers(topology)
    rows: list[list[_Item]] = []
    for keys in layers:
        row = []
        for key in keys:
            if key.startswith("~"):
                row.append(_Item(key, [], 1))
            else:
                lines = [key, *_facts(topology.component(key))]
                row.append(_Item(key, lines, max(map(len, lines)) + 4))
        rows.append(row)
    total = max(sum(i.width for i in row) + _GAP * (len(row) - 1) for row in rows)
    for row in rows:
        x = (total - sum(i.width for i in row) - _GAP * (len(row) - 1)) // 2
        for item in row:
            item.x = x
            x += item.width + _GAP
    out = [_summary(topology), ""]
    sources = {a for a, _ in edges}
    for index, row in enumerate(rows):
        out += _draw_layer(row, total, sources)
        if index + 1 < len(rows):
            out += _draw_channel(row, rows[index + 1], edges, total)
    return "\n".join(line.rstrip() for line in out) + "\n"


def _draw_layer(row: list[_Item], total: int, sources: set[str]) -> list[str]:
    height = max(len(i.lines) for i in row) + 2
    grid = [[" "] * total for _ in range(height)]
    for item in row:
        if not item.lines:
            for line in grid:
                line[item.x] = "│"
            continue
        inner = item.width - 2
        texts = ["┌" + "─" * inner + "┐"]
        texts += ["│ " + t.ljust(inner - 2) + " │" for t in item.lines]
        texts += ["│" + " " * inner + "│"] * (height - 2 - len(item.lines))
        bottom = ["└", *"─" * inner, "┘"]
        if item.key in sources:
            bottom[item.width // 2] = "┬"
        texts.append("".join(bottom))
        for y, text in enumerate(texts):
            grid[y][item.x : item.x + item.width] = list(text)
    return ["".join(line) for line in grid]


def _draw_channel(
    upper: list[_Item], lower: list[_Item], edges: set[tuple[str, str]], total: int
) -> list[str]:
    """Rows joining two layers: one track per target fed from elsewhere, then arrows."""
    port = {i.key: i.port for i in upper}
    feeds = {t.key: {port[a] for a, b in edges if b == t.key and a in port} for t in lower}
    targets = [t for t in lower if feeds[t.key]]
    straight = [t for t in targets if feeds[t.key] == {t.port}]
    src_cols = set(port.values()) & set().union(*feeds.values())
    tracked = [t for t in targets if t not in straight]
    # a target under a source it does not read from goes below that source's tracks
    tracked.sort(key=lambda t: (t.port in src_cols - feeds[t.key], t.port))
    last = len(tracked)
    track_of = {t.key: r for r, t in enumerate(tracked)}
    dirs: dict[tuple[int, int], list[int]] = {}

    def mark(row: int, col: int, up: int = 0, down: int = 0, left: int = 0, right: int = 0) -> None:
        cell = dirs.setdefault((row, col), [0, 0, 0, 0])
        for i, flag in enumerate((up, down, left, right)):
            cell[i] |= flag

    for col in src_cols:
        rows = [track_of[t.key] for t in tracked if col in feeds[t.key]]
        end = last if any(t.port == col for t in straight) else max(rows)
        for r in range(end + 1):
            mark(r, col, up=1, down=int(r < end))
    for t in tracked:
        for r in range(track_of[t.key], last):
            mark(r, t.port, up=int(r > track_of[t.key]), down=1)
    crossings: set[tuple[int, int]] = set()
    for t in tracked:
        r, joined = track_of[t.key], feeds[t.key] | {t.port}
        lo, hi = min(joined), max(joined)
        for col in range(lo, hi + 1):
            cell = dirs.get((r, col))
            if col not in joined and cell and cell[0] and cell[1]:
                crossings.add((r, col))  # drawn as a vertical line hopping the track
                continue
            mark(r, col, left=int(col > lo), right=int(col < hi))
    grid = [[" "] * total for _ in range(last + 1)]
    for (r, col), cell in dirs.items():
        grid[r][col] = (
            "│" if (r, col) in crossings else _LINES.get((cell[0], cell[1], cell[2], cell[3]), " ")
        )
    for t in targets:
        grid[last][t.port] = "│" if not t.lines else "▼"
    return ["".join(line) for line in grid]


# -- dot and mermaid ----------------------------------------------------------------


def _edge_labels(topology: Topology) -> list[tuple[str, str, str]]:
    """(source, worker, label); a bundled worker's inputs are numbered in argument order."""
    return [
        (source, w.name, str(n) if w.bundle else "")
        for w in topology.workers
        for n, source in enumerate(w.inputs, start=1)
    ]


def _dot(topology: Topology) -> str:
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = [
        f"digraph {quote(topology.name)} {{",
        f"  graph [rankdir=TB, labelloc=t, fontname=Helvetica, label={quote(_summary(topology))}];",
        '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", fontname=Helvetica];',
        "  edge [fontname=Helvetica, fontsize=10];",
    ]
    for comp in topology.components:
        label = "\\n".join(quote(t)[1:-1] for t in [comp.name, *_facts(comp)])
        extra = ', shape=cds, fillcolor="#dbeafe"' if isinstance(comp, Spout) else ""
        out.append(f'  {quote(comp.name)} [label="{label}"{extra}];')
    for source, worker, label in _edge_labels(topology):
        attrs = f" [label={quote(label)}]" if label else ""
        out.append(f"  {quote(source)} -> {quote(worker)}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid(topology: Topology) -> str:
    ids = {comp.name: f"n{i}" for i, comp in enumerate(topology.components)}
    out = ["```mermaid", "---", f"title: '{_summary(topology)}'", "---", "flowchart TD"]
    for comp in topology.components:
        label = "<br/>".join(t.replace('"', "#quot;") for t in [comp.name, *_facts(comp)])
        shape = ('(["', '"])') if isinstance(comp, Spout) else ('["', '"]')
        out.append(f"    {ids[comp.name]}{shape[0]}{label}{shape[1]}")
    for source, worker, label in _edge_labels(topology):
        arrow = f"-->|{label}|" if label else "-->"
        out.append(f"    {ids[source]} {arrow} {ids[worker]}")
    out.append("```")
    return "\n".join(out) + "\n"

"""Score-P's results as Jupyter MIME bundles: the profile (a bar chart of inclusive and
exclusive time per region, and the call tree as an indented table) and the trace (a timeline,
one row per location, regions as coloured bars, zoom and hover).

Every bundle holds ``text/html`` and a ``text/plain`` twin. The graphs are bokeh, turned into
offline HTML by :mod:`jumper_proxy.plots` like every other graph of the proxy; bokeh is imported
when the first graph is drawn.
"""

from __future__ import annotations

import html
import zlib
from collections.abc import Sequence
from typing import Any

from jumper_proxy.scorep_profile import Node, Profile, focus_nodes, format_seconds, top_regions
from jumper_proxy.scorep_trace import Timeline

#: how many regions the profile's bar chart shows (by inclusive time)
CHART_REGIONS = 25
#: how many call paths the call-tree table (in a scrolling box) and its text twin show
TREE_ROWS = 200
TEXT_ROWS = 60
#: below the top two levels, the call tree leaves out call paths with less of the time
TREE_SHARE = 0.005


def profile_bundle(profile: Profile, title: str, cell_id: str | None = None) -> dict[str, Any]:
    """The profile's bar chart and call tree, with the same as text (``cell_id``: the notebook
    cell the output is for, see :func:`jumper_proxy.embed.layout_html`)."""
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
    from bokeh.plotting import figure

    from jumper_proxy.embed import layout_html

    nodes = focus_nodes(profile)
    rows = sorted(top_regions(nodes, None), key=lambda r: -r.inclusive)
    shown = rows[:CHART_REGIONS][::-1]
    names = [row.region for row in shown]
    source = ColumnDataSource(
        {
            "region": names,
            "inclusive": [row.inclusive for row in shown],
            "exclusive": [row.exclusive for row in shown],
            "visits": [row.visits for row in shown],
            "inclusive_text": [format_seconds(row.inclusive) for row in shown],
            "exclusive_text": [format_seconds(row.exclusive) for row in shown],
        }
    )
    fig = figure(
        y_range=FactorRange(factors=names),
        x_range=Range1d(start=0, end=max((row.inclusive for row in shown), default=1.0) * 1.05),
        height=max(160, 26 * len(names) + 70),
        sizing_mode="stretch_width",
        title=f"{title}: time per region (inclusive and exclusive)",
        x_axis_label="seconds",
        tools="xpan,xwheel_zoom,reset,save",
    )
    inclusive = fig.hbar(
        y="region",
        right="inclusive",
        height=0.8,
        source=source,
        color="#9ecae1",
        legend_label="inclusive",
    )
    fig.hbar(
        y="region",
        right="exclusive",
        height=0.45,
        source=source,
        color="#08519c",
        legend_label="exclusive",
    )
    fig.add_tools(
        HoverTool(
            renderers=[inclusive],
            tooltips=[
                ("region", "@region"),
                ("inclusive", "@inclusive_text"),
                ("exclusive", "@exclusive_text"),
                ("visits", "@visits"),
            ],
        )
    )
    fig.legend.location = "bottom_right"
    text = profile_text(profile, title, nodes)
    parts = [layout_html(fig, cell_id=cell_id), call_tree_html(profile, nodes)]
    return {"text/html": "\n".join(parts), "text/plain": text}


def call_tree_lines(nodes: Sequence[Node], limit: int = TREE_ROWS) -> list[tuple[int, Node]]:
    """The call paths below ``nodes`` in tree order, the most inclusive time first among
    siblings, with their depth: at most ``limit``, and below the top two levels only those
    that took at least :data:`TREE_SHARE` of the time."""
    lines: list[tuple[int, Node]] = []
    least = sum(node.inclusive for node in nodes) * TREE_SHARE

    def visit(node: Node, depth: int) -> None:
        if len(lines) < limit and (depth < 2 or node.inclusive >= least):
            lines.append((depth, node))
            for child in sorted(node.children, key=lambda c: -c.inclusive):
                visit(child, depth + 1)

    for root in nodes:
        visit(root, 0)
    return lines


def _paths(nodes: Sequence[Node]) -> int:
    return sum(1 for root in nodes for _ in root.walk())


def call_tree_html(profile: Profile, nodes: Sequence[Node]) -> str:
    """The call tree below ``nodes`` as an indented table: inclusive, exclusive, visits."""
    rows = []
    for depth, node in call_tree_lines(nodes):
        rows.append(
            f"<tr><td>{format_seconds(node.inclusive)}</td>"
            f"<td>{format_seconds(node.exclusive)}</td><td>{node.visits:,}</td>"
            '<td style="text-align:left;font-family:monospace;white-space:pre;'
            f'padding-left:{0.5 + 1.2 * depth}em">{html.escape(node.region)}</td></tr>'
        )
    total = _paths(nodes)
    more = (
        f'<tr><td colspan="4" style="text-align:left;color:#666">... and {total - len(rows)} '
        f"more call paths (each under {TREE_SHARE:.1%} of the time, or past {TREE_ROWS})"
        "</td></tr>"
        if total > len(rows)
        else ""
    )
    return (
        '<div style="max-height:28em;overflow:auto;border-top:1px solid #ddd">'
        '<table class="jumper-scorep-calltree" style="font-size:small">'
        '<caption style="text-align:left">Call tree (most inclusive time first)</caption>'
        "<thead><tr><th>inclusive</th><th>exclusive</th><th>visits</th>"
        f'<th style="text-align:left">call path</th></tr></thead><tbody>{"".join(rows)}{more}'
        "</tbody>"
        "</table></div>"
    )


def profile_text(profile: Profile, title: str, nodes: Sequence[Node]) -> str:
    """The call tree below ``nodes`` as text, with the time per region on each line."""
    lines = [f"{title} ({profile.path}, {profile.locations} locations)", "Call tree:"]
    shown = call_tree_lines(nodes, TEXT_ROWS)
    width = max((2 * d + len(n.region) for d, n in shown), default=10)
    lines.append(f"  {'call path':<{width}}  {'inclusive':>10}  {'exclusive':>10}  {'visits':>9}")
    for depth, node in shown:
        label = "  " * depth + node.region
        lines.append(
            f"  {label:<{width}}  {format_seconds(node.inclusive):>10}  "
            f"{format_seconds(node.exclusive):>10}  {node.visits:>9,}"
        )
    if _paths(nodes) > len(shown):
        lines.append(f"  ... and {_paths(nodes) - len(shown)} more call paths")
    return "\n".join(lines)


def trace_bundle(timeline: Timeline, title: str, cell_id: str | None = None) -> dict[str, Any]:
    """The timeline as an interactive graph, with a text summary."""
    from bokeh.models import ColumnDataSource, HoverTool, Range1d
    from bokeh.plotting import figure

    from jumper_proxy.embed import layout_html

    depth_max = max(timeline.depth, default=0) + 1
    lane = 1.0 / depth_max
    rows = len(timeline.locations)
    lanes = list(zip(timeline.row, timeline.depth, strict=True))
    span = max(timeline.duration, 1e-9)
    # the view starts on the cells (Score-P's start and the handover come before them)
    first = min(timeline.start, default=0.0)
    last = max(timeline.end, default=span)
    margin = (last - first) * 0.02
    view = (max(0.0, first - margin), min(span, last + margin) if last > first else span)
    source = ColumnDataSource(
        {
            "left": timeline.start,
            "right": timeline.end,
            "top": [rows - r - d * lane for r, d in lanes],
            "bottom": [rows - r - (d + 0.96) * lane for r, d in lanes],
            "region": timeline.region,
            "color": [region_color(name) for name in timeline.region],
            "location": [timeline.locations[r] for r in timeline.row],
            "duration": [
                format_seconds(e - s) for s, e in zip(timeline.start, timeline.end, strict=True)
            ],
            "calls": timeline.merged,
        }
    )
    fig = figure(
        height=min(700, 90 + 60 * rows * min(depth_max, 4)),
        sizing_mode="stretch_width",
        title=f"{title}: {len(timeline):,} bars, {rows} locations",
        x_axis_label="seconds since the start of the trace",
        x_range=Range1d(start=view[0], end=view[1], bounds=(0, span)),
        y_range=Range1d(start=0, end=rows + 0.05),
        tools="xpan,xwheel_zoom,xbox_zoom,reset,save",
        active_scroll="xwheel_zoom",
    )
    bars = fig.quad(
        left="left",
        right="right",
        top="top",
        bottom="bottom",
        color="color",
        line_color=None,
        source=source,
    )
    fig.add_tools(
        HoverTool(
            renderers=[bars],
            tooltips=[
                ("region", "@region"),
                ("location", "@location"),
                ("duration", "@duration"),
                ("calls", "@calls"),
            ],
        )
    )
    if timeline.flushes:
        fig.quad(
            left=[s for _, s, _ in timeline.flushes],
            right=[e for _, _, e in timeline.flushes],
            top=[rows - r for r, _, _ in timeline.flushes],
            bottom=[rows - r - 1 for r, _, _ in timeline.flushes],
            color="#d62728",
            alpha=0.35,
            legend_label="trace buffer flush",
        )
    fig.yaxis.ticker = [rows - r - 0.5 for r in range(rows)]
    fig.yaxis.major_label_overrides = {
        rows - r - 0.5: name for r, name in enumerate(timeline.locations)
    }
    fig.ygrid.grid_line_color = None
    text = trace_text(timeline, title)
    note = f'<pre class="jumper-summary">{html.escape(text)}</pre>'
    return {"text/html": note + "\n" + layout_html(fig, cell_id=cell_id), "text/plain": text}


def trace_text(timeline: Timeline, title: str) -> str:
    """What the timeline shows, in words: extent, locations, busiest regions, reductions."""
    busy: dict[str, float] = {}
    for region, depth, start, end in zip(
        timeline.region, timeline.depth, timeline.start, timeline.end, strict=True
    ):
        if depth > 0 or len(timeline.locations) == 1:
            busy[region] = busy.get(region, 0.0) + end - start
    lines = [
        f"{title} ({timeline.path})",
        f"{format_seconds(timeline.duration)}, {len(timeline.locations)} locations "
        f"({', '.join(timeline.locations)}), {timeline.calls:,} calls, {len(timeline):,} bars",
    ]
    for region, spent in sorted(busy.items(), key=lambda item: -item[1])[:5]:
        lines.append(f"  {region}: {format_seconds(spent)} in bars")
    if timeline.flushes:
        lines.append(f"{len(timeline.flushes)} trace buffer flushes (marked red)")
    if timeline.reduced:
        lines.append("Reduced to stay small: " + "; ".join(timeline.reduced) + ".")
    return "\n".join(lines)


_PALETTE: Sequence[str] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
    "#8c6d31",
)


def region_color(region: str) -> str:
    """A stable colour per region name (the same region has the same colour in every graph)."""
    return _PALETTE[zlib.crc32(region.encode()) % len(_PALETTE)]

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

from jumper_proxy.scorep_profile import Node, Profile, format_seconds, top_regions
from jumper_proxy.scorep_trace import Timeline

#: how many regions the profile's bar chart shows (by inclusive time)
CHART_REGIONS = 25
#: how many call paths the call-tree table shows
TREE_ROWS = 300


def profile_bundle(profile: Profile, title: str) -> dict[str, Any]:
    """The profile's bar chart and call tree, with the same as text."""
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
    from bokeh.plotting import figure

    from jumper_proxy import plots

    rows = sorted(top_regions(profile.roots, None), key=lambda r: -r.inclusive)
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
    text = profile_text(profile, title)
    parts = [plots._embed(fig), call_tree_html(profile)]
    return {"text/html": "\n".join(parts), "text/plain": text}


def call_tree_lines(profile: Profile) -> list[tuple[int, Node]]:
    """The call paths in tree order with their depth (at most :data:`TREE_ROWS`)."""
    lines = [item for root in profile.roots for item in root.walk()]
    return lines[:TREE_ROWS]


def call_tree_html(profile: Profile) -> str:
    """The call tree as an indented table: inclusive, exclusive, visits."""
    rows = []
    for depth, node in call_tree_lines(profile):
        rows.append(
            "<tr>"
            f'<td style="text-align:left;font-family:monospace;padding-left:{0.5 + 1.2 * depth}em">'
            f"{html.escape(node.region)}</td>"
            f"<td>{format_seconds(node.inclusive)}</td><td>{format_seconds(node.exclusive)}</td>"
            f"<td>{node.visits:,}</td></tr>"
        )
    total = sum(1 for root in profile.roots for _ in root.walk())
    more = (
        f'<tr><td colspan="4" style="text-align:left;color:#666">... {total - TREE_ROWS} more '
        "call paths</td></tr>"
        if total > TREE_ROWS
        else ""
    )
    return (
        '<table class="jumper-scorep-calltree" style="font-size:small">'
        '<caption style="text-align:left">Call tree</caption><thead><tr>'
        '<th style="text-align:left">call path</th><th>inclusive</th><th>exclusive</th>'
        f"<th>visits</th></tr></thead><tbody>{''.join(rows)}{more}</tbody></table>"
    )


def profile_text(profile: Profile, title: str) -> str:
    """The call tree as text, with the time per region on each line."""
    lines = [f"{title} ({profile.path}, {profile.locations} locations)", "Call tree:"]
    width = max((2 * d + len(n.region) for d, n in call_tree_lines(profile)), default=10)
    lines.append(f"  {'call path':<{width}}  {'inclusive':>10}  {'exclusive':>10}  {'visits':>9}")
    for depth, node in call_tree_lines(profile):
        label = "  " * depth + node.region
        lines.append(
            f"  {label:<{width}}  {format_seconds(node.inclusive):>10}  "
            f"{format_seconds(node.exclusive):>10}  {node.visits:>9,}"
        )
    return "\n".join(lines)


def trace_bundle(timeline: Timeline, title: str) -> dict[str, Any]:
    """The timeline as an interactive graph, with a text summary."""
    from bokeh.models import ColumnDataSource, HoverTool, Range1d
    from bokeh.plotting import figure

    from jumper_proxy import plots

    depth_max = max(timeline.depth, default=0) + 1
    lane = 1.0 / depth_max
    rows = len(timeline.locations)
    lanes = list(zip(timeline.row, timeline.depth, strict=True))
    span = max(timeline.duration, 1e-9)
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
        x_range=Range1d(start=0, end=span, bounds=(0, span)),
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
    return {"text/html": note + "\n" + plots._embed(fig), "text/plain": text}


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

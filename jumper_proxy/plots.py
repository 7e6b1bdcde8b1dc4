"""Bokeh graphs and text summaries of cell records, as Jupyter MIME bundles.

Pure functions of :class:`~jumper_proxy.monitor.store.CellRecord` values. Every graph bundle
holds ``text/html`` (an interactive bokeh graph) and ``text/plain`` (the summary). The HTML
draws without network access and without any frontend extension, in saved notebooks and in
HTML exports: BokehJS comes inline with the first graph output of a kernel session, and later
outputs use it (:mod:`jumper_proxy.embed`).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bokeh.layouts import gridplot
from bokeh.models import DataRange1d, HoverTool, LayoutDOM, Range1d
from bokeh.models.annotations import BoxAnnotation, Label, Span
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from jumper_proxy.embed import SESSION_BOKEHJS, BokehJSCarrier, layout_html
from jumper_proxy.errors import MagicError
from jumper_proxy.monitor.store import METRICS, CellRecord, interval_mean, sample_count

__all__ = [
    "DEFAULT_METRICS",
    "graph_bundle",
    "graph_layout",
    "live_bundle",
    "parse_metric_list",
    "summary_text",
]

#: Metrics drawn when none are asked for (the GPU ones only when there is GPU data).
DEFAULT_METRICS: tuple[str, ...] = (
    "cpu_percent",
    "memory_rss_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "gpu_util_percent",
    "gpu_memory_bytes",
)


@dataclass(frozen=True)
class _Panel:
    title: str
    unit: str  # "bytes" scales to B/KiB/MiB/...; anything else is the axis unit as is
    metrics: tuple[str, ...]
    per_item: str = ""  # label of list entries ("core", "GPU"); empty for scalar metrics
    #: each sample is the mean over the interval that ends at it: drawn as steps, not slopes
    rate: bool = False


_PANELS = (
    _Panel("CPU of the kernel's process tree", "% of one core", ("cpu_percent",), rate=True),
    _Panel("CPU per core (node)", "% busy", ("cpu_percent_per_core",), "core", rate=True),
    _Panel("Memory of the process tree (RSS)", "bytes", ("memory_rss_bytes",)),
    _Panel("Memory used on the node", "%", ("memory_percent",)),
    _Panel("I/O since cell start", "bytes", ("io_read_bytes", "io_write_bytes")),
    _Panel("I/O operations since cell start", "ops", ("io_read_count", "io_write_count")),
    _Panel("Processes and threads", "count", ("num_procs", "num_threads")),
    _Panel("GPU utilisation", "%", ("gpu_util_percent",), "GPU", rate=True),
    _Panel("GPU memory used", "bytes", ("gpu_memory_bytes",), "GPU"),
)
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_HEIGHT = 190


def parse_metric_list(args: str) -> list[str] | None:
    """Metric names from a magic's argument text (commas or spaces), or ``None`` if empty."""
    names = [name for name in re.split(r"[\s,]+", args.strip()) if name]
    return _check_metrics(names) if names else None


def summary_text(record: CellRecord) -> str:
    """A few lines on one cell: duration, CPU mean/max, peak memory, I/O, GPU when present."""
    head = f"Cell {record.index} ({record.status}): {record.duration:.2f} s"
    s = record.samples
    n = sample_count(s)
    if not n:
        why = (
            "samples dropped to bound memory"
            if record.samples_dropped
            else "too short to sample (fewer than JUMPER_REPORTS_MIN samples)"
        )
        return f"{head}, {why}"
    lines = [
        f"{head}, {n} samples",
        f"  CPU: mean {interval_mean(s['time_s'], s['cpu_percent']):.1f} %, "
        f"max {max(s['cpu_percent']):.1f} % (100 % = one core)",
        f"  Memory: peak {_bytes(max(s['memory_rss_bytes']))} RSS, "
        f"node up to {max(s['memory_percent']):.1f} %",
        f"  I/O: read {_bytes(s['io_read_bytes'][-1])} ({s['io_read_count'][-1]} ops), "
        f"written {_bytes(s['io_write_bytes'][-1])} ({s['io_write_count'][-1]} ops)",
        f"  Processes: up to {max(s['num_procs'])}, threads: up to {max(s['num_threads'])}",
    ]
    memory = _per_item(s["time_s"], s["gpu_memory_bytes"])
    for gpu, (times, util) in enumerate(_per_item(s["time_s"], s["gpu_util_percent"])):
        peak = max(memory[gpu][1], default=0) if gpu < len(memory) else 0
        lines.append(
            f"  GPU {gpu}: mean {interval_mean(times, util):.1f} %, max {max(util):.1f} %, "
            f"memory up to {_bytes(peak)}"
        )
    return "\n".join(lines)


def graph_layout(
    records: Sequence[CellRecord], metrics: list[str] | None = None, *, timeline: bool = False
) -> LayoutDOM | None:
    """The bokeh layout of ``records`` (``None`` when none has samples to draw).

    One record: its metrics over the time since the cell started. Several: overlaid, one
    colour per cell, or with ``timeline`` back to back on one axis of monitored time (idle
    time between cells left out), each cell's span shaded and labelled with its index.
    """
    if not records:
        raise MagicError("No cell has been monitored yet: run a cell first, then ask for its data.")
    chosen = _check_metrics(metrics) if metrics is not None else _default_metrics(records)
    offsets = _offsets(records) if timeline else [0.0] * len(records)
    figures: list[Any] = []
    span = max(_end(r) + o for r, o in zip(records, offsets, strict=True))
    x_range = Range1d(start=0.0, end=max(span, 1e-3))
    for panel in _PANELS:
        lines = _panel_lines(panel, chosen, records, offsets, timeline)
        if not lines:
            continue
        values = [y for _, _, ys, _ in lines for y in ys if not math.isnan(y)]
        scale, unit = _scale(values, panel.unit)
        fig = figure(
            title=panel.title,
            height=_HEIGHT,
            sizing_mode="stretch_width",
            x_range=x_range,
            y_range=DataRange1d(start=0),
            tools="xpan,xwheel_zoom,box_zoom,reset,save",
            y_axis_label=unit,
        )
        for i, (name, xs, ys, cell) in enumerate(lines):
            color = Category10_10[(cell if len(records) > 1 and not timeline else i) % 10]
            scaled = [y / scale for y in ys]
            fig.line(
                *(steps(xs, scaled) if panel.rate else (xs, scaled)),
                name=name,
                legend_label=name,
                color=color,
                line_width=1.2 if panel.per_item == "core" else 2,
                line_dash="dashed" if "io_write" in name else "solid",
            )
        fig.add_tools(
            HoverTool(
                tooltips=[("", "$name"), ("t", "@x{0.00} s"), (unit, "@y{0.[00]}")],
                mode="vline",
            )
        )
        fig.legend.click_policy = "hide"
        fig.add_layout(fig.legend[0], "right")  # beside the plot, never over the lines
        fig.legend.label_text_font_size = "8pt"
        fig.legend.spacing = 2
        fig.legend.visible = len(lines) <= 16
        if timeline:
            _mark_cells(fig, records, offsets, label=not figures)
        figures.append(fig)
    if not figures:
        return None
    figures[-1].xaxis.axis_label = (
        "monitored time (s), cells back to back" if timeline else "time since cell start (s)"
    )
    grid: LayoutDOM = gridplot(
        [[f] for f in figures], sizing_mode="stretch_width", toolbar_location="right"
    )
    return grid


def graph_bundle(
    records: list[CellRecord],
    metrics: list[str] | None = None,
    *,
    timeline: bool = False,
    carrier: BokehJSCarrier | None = SESSION_BOKEHJS,
    cell_id: str | None = None,
) -> dict[str, Any]:
    """A MIME bundle: the interactive graph of ``records`` and their text summary.

    ``carrier`` decides whether BokehJS comes with it, for the output of notebook cell
    ``cell_id`` (:func:`jumper_proxy.embed.layout_html`).
    """
    layout = graph_layout(records, metrics, timeline=timeline)
    text = "\n\n".join(summary_text(r) for r in records)
    if timeline and len(records) > 1:
        total = sum(r.duration for r in records)
        text = f"Cells {records[0].index} to {records[-1].index}: {total:.2f} s in total\n\n{text}"
    missing = [m for m in metrics or () if not any(_has_data(r, m) for r in records)]
    if missing and any(sample_count(r.samples) for r in records):
        text += f"\n\nNo data for {', '.join(missing)}."
    parts = [f'<pre class="jumper-summary">{html.escape(text)}</pre>']
    if layout is not None:
        parts.append(layout_html(layout, carrier, cell_id))
    return {"text/html": "\n".join(parts), "text/plain": text}


def live_bundle(
    index: int, elapsed_s: float, snapshot: Mapping[str, Any] | None, *, finished: bool = False
) -> dict[str, Any]:
    """A small, cheap display of a running cell's latest sample, for updating in place."""
    head = f"Cell {index} {'finished after' if finished else 'running:'} {elapsed_s:.1f} s"
    if snapshot is None:
        text = f"{head}, no sample yet"
    else:
        text = (
            f"{head} · CPU {snapshot['cpu_percent']:.0f} % · "
            f"RSS {_bytes(snapshot['memory_rss_bytes'])} · "
            f"I/O read {_bytes(snapshot['io_read_bytes'])}, "
            f"written {_bytes(snapshot['io_write_bytes'])} · "
            f"{_count(snapshot['num_procs'], 'process', 'processes')}, "
            f"{_count(snapshot['num_threads'], 'thread', 'threads')}"
        )
        if snapshot["gpu_util_percent"]:
            text += " · GPU " + ", ".join(f"{u:.0f} %" for u in snapshot["gpu_util_percent"])
    style = "font-family: monospace; padding: 2px 0; color: #555"
    return {"text/plain": text, "text/html": f'<div style="{style}">{html.escape(text)}</div>'}


def steps(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """The corners of a step line where each ``y`` holds over the interval ending at its ``x``.

    Drawn as a plain line (which, unlike bokeh's step glyph, answers the hover tool). A NaN
    (a break between cells on a timeline) stays a break.
    """
    out_x: list[float] = []
    out_y: list[float] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if i == 0 or math.isnan(ys[i - 1]) or math.isnan(y):  # a start, or either side of a break
            out_x.append(x)
            out_y.append(y)
            continue
        out_x += [xs[i - 1], x]
        out_y += [y, y]
    return out_x, out_y


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _check_metrics(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise MagicError(
            f"Unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid metrics: {', '.join(METRICS)}."
        )
    return list(dict.fromkeys(names))


def _default_metrics(records: Sequence[CellRecord]) -> list[str]:
    has_gpu = any(_has_data(r, "gpu_util_percent") for r in records)
    return [m for m in DEFAULT_METRICS if has_gpu or not m.startswith("gpu_")]


def _has_data(record: CellRecord, metric: str) -> bool:
    """Whether ``record`` has samples of ``metric`` (per-device lists may all be empty)."""
    return any(v != [] for v in record.samples.get(metric, ()))


def _panel_lines(
    panel: _Panel,
    chosen: list[str],
    records: Sequence[CellRecord],
    offsets: list[float],
    timeline: bool,
) -> list[tuple[str, list[float], list[float], int]]:
    """(name, xs, ys, record position) of each line of ``panel``.

    On a timeline each name is one line across all cells, broken (NaN) between cells.
    """
    lines: dict[str, tuple[str, list[float], list[float], int]] = {}
    for pos, (record, offset) in enumerate(zip(records, offsets, strict=True)):
        s = record.samples
        if not sample_count(s):
            continue
        xs = [t + offset for t in s["time_s"]]
        for metric in (m for m in panel.metrics if m in chosen):
            series = _per_item(xs, s[metric]) if panel.per_item else [(xs, s[metric])]
            for item, (item_xs, ys) in enumerate(series):
                name = f"{panel.per_item} {item}" if panel.per_item else metric
                if not timeline and len(records) > 1:
                    name = f"#{record.index} {name}"
                line = lines.setdefault(name, (name, [], [], pos))
                if line[1]:
                    line[1].append(line[1][-1])
                    line[2].append(float("nan"))
                line[1].extend(item_xs)
                line[2].extend(float(y) for y in ys)
    return list(lines.values())


def _mark_cells(fig: Any, records: Sequence[CellRecord], offsets: list[float], label: bool) -> None:
    for pos, (record, offset) in enumerate(zip(records, offsets, strict=True)):
        fig.add_layout(
            BoxAnnotation(
                name=f"cell {record.index}",
                left=offset,
                right=offset + _end(record),
                fill_color="#1f77b4" if pos % 2 else "#7f7f7f",
                fill_alpha=0.07,
            )
        )
        fig.add_layout(
            Span(
                name=f"cell {record.index}",
                location=offset,
                dimension="height",
                line_alpha=0.4,
                line_width=1,
            )
        )
    if not label:
        return
    span = max(_end(r) + o for r, o in zip(records, offsets, strict=True))
    for x, text, right in timeline_labels([r.index for r in records], offsets, span):
        fig.add_layout(
            Label(
                name=f"cell {text}",
                x=x,
                y=4,
                y_units="screen",
                x_offset=-3 if right else 3,
                text=text,
                text_align="right" if right else "left",
                text_font_size=f"{_LABEL_FONT_PX}px",
                text_color="#444444",
            )
        )


#: the narrowest plot area the timeline's labels are laid out for: on wider plots (and when
#: zoomed in) they are further apart
_LABEL_PLOT_PX = 480
_LABEL_FONT_PX = 12
_LABEL_CHAR_PX = 7.5  # a digit, "#" or an en dash at 12 px, with room to spare
_LABEL_GAP_PX = 8


def timeline_labels(
    indices: Sequence[int], offsets: Sequence[float], span: float
) -> list[tuple[float, str, bool]]:
    """The cell labels of a timeline, as ``(x, text, right_aligned)``, that never overlap on a
    plot at least ``_LABEL_PLOT_PX`` wide: a cell starting too close to the label before it
    joins that label, which then names a range of cells (``#3`` to ``#7``, written with an en
    dash). The last label, if it would run past the end of the axis, is drawn leftwards from
    the end (joining the one before if they would meet)."""
    px = _LABEL_PLOT_PX / span if span > 0 else 0.0

    def width(first: int, last: int) -> float:
        return 3 + len(_label_text(first, last)) * _LABEL_CHAR_PX

    groups: list[tuple[float, int, int]] = []  # (x, first index, last index)
    for index, x in zip(indices, offsets, strict=True):
        if groups:
            start, first, last = groups[-1]
            if (x - start) * px < width(first, last) + _LABEL_GAP_PX:
                groups[-1] = (start, first, index)
                continue
        groups.append((x, index, index))
    right = False
    while groups:
        x, first, last = groups[-1]
        right = (span - x) * px < width(first, last) <= span * px
        if not right or len(groups) == 1:
            break
        before_x, before_first, before_last = groups[-2]
        if span * px - width(first, last) >= (
            before_x * px + width(before_first, before_last) + _LABEL_GAP_PX
        ):
            break
        groups[-2:] = [(before_x, before_first, last)]
    labels = [(x, _label_text(first, last), False) for x, first, last in groups]
    if right and labels:
        labels[-1] = (span, labels[-1][1], True)
    return labels


def _label_text(first: int, last: int) -> str:
    return f"#{first}" if first == last else f"#{first}\u2013{last}"


def _per_item(xs: list[float], rows: list[list[float]]) -> list[tuple[list[float], list[float]]]:
    """One (xs, ys) series per entry of a column of lists (per core, per GPU)."""
    width = max((len(row) for row in rows), default=0)
    return [
        (
            [x for x, row in zip(xs, rows, strict=True) if len(row) > i],
            [row[i] for row in rows if len(row) > i],
        )
        for i in range(width)
    ]


def _offsets(records: Sequence[CellRecord]) -> list[float]:
    offsets, at = [], 0.0
    for record in records:
        offsets.append(at)
        at += _end(record)
    return offsets


def _end(record: CellRecord) -> float:
    times: list[float] = record.samples.get("time_s") or [0.0]
    return max(record.duration, times[-1])


def _scale(values: list[float], unit: str) -> tuple[float, str]:
    if unit != "bytes":
        return 1.0, unit
    peak, power = max(values, default=0.0), 0
    while peak >= 1024 ** (power + 1) and power < len(_BYTE_UNITS) - 1:
        power += 1
    return float(1024**power), _BYTE_UNITS[power]


def _bytes(value: float) -> str:
    scale, unit = _scale([value], "bytes")
    return f"{value:.0f} B" if unit == "B" else f"{value / scale:.1f} {unit}"

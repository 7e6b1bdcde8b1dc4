"""Graphs and summaries from records: bundles, numbers, metric choice, timeline marks."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import pytest
from bokeh.models import GlyphRenderer
from bokeh.models.annotations import BoxAnnotation, Label, Span
from bokeh.plotting import figure

from jumper_proxy.embed import BokehJSCarrier
from jumper_proxy.errors import MagicError
from jumper_proxy.monitor import METRICS, CellRecord
from jumper_proxy.plots import (
    graph_bundle,
    graph_layout,
    live_bundle,
    parse_metric_list,
    summary_text,
    timeline_labels,
)

MiB = 2**20


def known_record(index: int = 0, gpus: int = 0) -> CellRecord:
    """Three samples whose summary can be worked out by hand."""
    samples: dict[str, list[Any]] = {
        "time_s": [1.0, 2.0, 4.0],
        "cpu_percent": [100.0, 50.0, 25.0],
        "cpu_percent_per_core": [[90.0, 10.0], [40.0, 10.0], [20.0, 5.0]],
        "memory_rss_bytes": [1 * MiB, 3 * MiB, 2 * MiB],
        "memory_percent": [10.0, 12.5, 11.0],
        "io_read_bytes": [0, 512, 1024],
        "io_write_bytes": [0, 5 * MiB, 10 * MiB],
        "io_read_count": [0, 1, 2],
        "io_write_count": [0, 5, 10],
        "num_procs": [1, 3, 2],
        "num_threads": [4, 9, 6],
        "gpu_util_percent": [
            [10.0 * (g + 1) for g in range(gpus)],
            [30.0 * (g + 1) for g in range(gpus)],
            [0.0] * gpus,
        ],
        "gpu_memory_bytes": [[g * MiB for g in range(gpus)] for _ in range(3)],
    }
    return CellRecord(
        index=index,
        code="work()",
        start=1000.0,
        end=1004.0,
        duration=4.0,
        status="ok",
        samples=samples,
    )


def test_summary_numbers() -> None:
    text = summary_text(known_record())
    assert text.splitlines() == [
        "Cell 0 (ok): 4.00 s, 3 samples",
        # (100 * 1 s + 50 * 1 s + 25 * 2 s) / 4 s
        "  CPU: mean 50.0 %, max 100.0 % (100 % = one core)",
        "  Memory: peak 3.0 MiB RSS, node up to 12.5 %",
        "  I/O: read 1.0 KiB (2 ops), written 10.0 MiB (10 ops)",
        "  Processes: up to 3, threads: up to 9",
    ]


def test_summary_with_gpus() -> None:
    lines = summary_text(known_record(gpus=2)).splitlines()
    # GPU 0: (10 * 1 + 30 * 1 + 0 * 2) / 4 = 10; GPU 1 twice that
    assert lines[-2:] == [
        "  GPU 0: mean 10.0 %, max 30.0 %, memory up to 0 B",
        "  GPU 1: mean 20.0 %, max 60.0 %, memory up to 1.0 MiB",
    ]


def test_summary_without_samples() -> None:
    short = CellRecord(index=4, code="pass", start=1.0, end=1.1, duration=0.1, status="error")
    assert summary_text(short) == (
        "Cell 4 (error): 0.10 s, too short to sample (fewer than JUMPER_REPORTS_MIN samples)"
    )
    short.samples_dropped = True
    assert summary_text(short).endswith("samples dropped to bound memory")


def test_the_first_bundle_carries_bokehjs_and_the_later_ones_use_it() -> None:
    carrier = BokehJSCarrier()
    first, second, third = (graph_bundle([known_record()], carrier=carrier) for _ in range(3))

    assert set(first) == {"text/html", "text/plain"}
    assert first["text/plain"] == summary_text(known_record())
    page = first["text/html"]
    assert page.count("BEGIN bokeh.min.js") == 1 and "embed_item(" in page
    assert '"name": "Figure"' in page
    assert "cdn.bokeh.org" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    # every script element ends where it should: nothing inside closes it early
    assert page.count("<script") == page.count("</script>") == 2
    assert len(page) > 1_000_000
    for later in (second, third):
        html = later["text/html"]
        assert "bokeh.min.js" not in html
        assert html.count("<script") == html.count("</script>") == 1
        assert "embed_item(" in html and "jumperBokehWaiting" in html  # waits for the carrier
        assert len(html.encode()) < 300_000


def test_the_cell_that_carried_bokehjs_carries_it_again_when_run_again() -> None:
    """Its new output replaces the one with BokehJS in the saved notebook."""
    carrier = BokehJSCarrier()

    def carries(cell: str | None) -> bool:
        html = graph_bundle([known_record()], carrier=carrier, cell_id=cell)["text/html"]
        return "bokeh.min.js" in html

    assert [carries("a"), carries("b"), carries(None), carries("a"), carries("b")] == [
        True,
        False,
        False,
        True,
        False,
    ]


def test_without_a_carrier_the_page_brings_bokehjs() -> None:
    html = graph_bundle([known_record()], carrier=None)["text/html"]

    assert "bokeh.min.js" not in html and "embed_item(" in html


def test_a_record_without_samples_gets_text_only_and_leaves_bokehjs_for_later() -> None:
    carrier = BokehJSCarrier()
    short = CellRecord(index=0, code="pass", start=1.0, end=1.1, duration=0.1, status="ok")
    bundle = graph_bundle([short], carrier=carrier)
    assert "<script" not in bundle["text/html"]
    assert "too short to sample" in bundle["text/html"]
    assert "bokeh.min.js" in graph_bundle([known_record()], carrier=carrier)["text/html"]


def lines_of(layout: Any) -> dict[str, list[float]]:
    return {r.name: list(r.data_source.data["y"]) for r in layout.select({"type": GlyphRenderer})}


def test_default_metrics_leave_out_gpu_without_data() -> None:
    assert set(lines_of(graph_layout([known_record()]))) == {
        "cpu_percent",
        "memory_rss_bytes",
        "io_read_bytes",
        "io_write_bytes",
    }
    with_gpu = set(lines_of(graph_layout([known_record(gpus=2)])))
    assert {"GPU 0", "GPU 1"} <= with_gpu


def test_chosen_metrics_and_byte_scaling() -> None:
    layout = graph_layout([known_record()], ["memory_rss_bytes", "cpu_percent_per_core"])
    lines = lines_of(layout)
    # rates hold over the interval before each sample: steps; memory is read at each sample
    assert lines == {"core 0": [90.0, 40.0, 40.0, 20.0, 20.0], "core 1": [10.0, 10.0, 10.0, 5.0, 5.0],
                     "memory_rss_bytes": [1.0, 3.0, 2.0]}  # fmt: skip
    assert "MiB" in {f.yaxis[0].axis_label for f in layout.select({"type": figure})}


def test_chosen_metrics_without_data_are_named() -> None:
    text = graph_bundle([known_record()], ["cpu_percent", "gpu_memory_bytes"])["text/plain"]
    assert text.endswith("\n\nNo data for gpu_memory_bytes.")
    assert "No data" not in graph_bundle([known_record(gpus=1)], ["gpu_memory_bytes"])["text/plain"]


def test_unknown_metrics_are_refused_with_the_valid_names() -> None:
    with pytest.raises(MagicError, match=r"Unknown metric cpu\b.*valid metrics: cpu_percent, "):
        graph_bundle([known_record()], ["cpu"])
    with pytest.raises(MagicError, match=r"Unknown metrics time_s, ram"):
        parse_metric_list("time_s, ram")


def test_parse_metric_list() -> None:
    assert parse_metric_list("  ") is None
    assert parse_metric_list("cpu_percent, memory_rss_bytes  cpu_percent") == [
        "cpu_percent",
        "memory_rss_bytes",
    ]
    assert parse_metric_list(" ".join(METRICS)) == list(METRICS)


def test_no_records_is_an_error() -> None:
    with pytest.raises(MagicError, match="No cell has been monitored yet"):
        graph_bundle([])


def test_the_timeline_marks_every_cell_on_one_axis() -> None:
    short = CellRecord(index=1, code="pass", start=1.0, end=1.5, duration=0.5, status="ok")
    records = [known_record(0), short, known_record(2)]
    layout = graph_layout(records, ["cpu_percent", "memory_rss_bytes"], timeline=True)
    labels = sorted(label.text for label in layout.select({"type": Label}))
    assert labels == ["#0", "#1", "#2"]  # on the top panel only
    boxes = sorted(
        (b.name, b.left, b.right)
        for b in layout.select({"type": BoxAnnotation})
        if b.name is not None
    )
    assert boxes == sorted(
        [("cell 0", 0.0, 4.0), ("cell 1", 4.0, 4.5), ("cell 2", 4.5, 8.5)] * 2  # two panels
    )
    spans = sorted((s.name, s.location) for s in layout.select({"type": Span}))
    assert spans == sorted([("cell 0", 0.0), ("cell 1", 4.0), ("cell 2", 4.5)] * 2)
    cpu = next(r for r in layout.select({"type": GlyphRenderer}) if r.name == "cpu_percent")
    xs, ys = cpu.data_source.data["x"], cpu.data_source.data["y"]
    assert xs[:5] == [1.0, 1.0, 2.0, 2.0, 4.0] and xs[-5:] == [5.5, 5.5, 6.5, 6.5, 8.5]
    assert ys[:5] == [100.0, 50.0, 50.0, 25.0, 25.0]
    assert math.isnan(ys[5])  # the line breaks between cells: nothing drawn over cell 1
    assert ys[6] == 100.0 and xs[6] == 5.5
    text = graph_bundle(records, timeline=True)["text/plain"]
    assert text.startswith("Cells 0 to 2: 8.50 s in total")
    assert all(f"Cell {i} (ok)" in text for i in range(3))


def test_labels_of_short_cells_never_overlap() -> None:
    # ten 20 ms cells after a long one, a long one, then a short one at the very end
    def short(index: int, duration: float) -> CellRecord:
        return CellRecord(
            index=index, code="x", start=0.0, end=duration, duration=duration, status="ok"
        )

    records = [
        known_record(0),
        *(short(i, 0.02) for i in range(1, 11)),
        known_record(11),
        short(12, 0.05),
    ]
    durations = [r.duration for r in records]
    offsets = [sum(durations[:i]) for i in range(len(durations))]
    span = sum(durations)

    labels = timeline_labels([r.index for r in records], offsets, span)

    # cell 11 starts 0.2 s after cell 1, within the label of 1 to 10: it joins that label
    assert [text for _, text, _ in labels] == ["#0", "#1\u201311", "#12"]
    assert labels[-1] == (span, "#12", True)  # drawn leftwards from the end of the axis
    # on the narrowest plot they are laid out for (480 px), with 7.5 px per character
    px = 480 / span
    edges = [
        (
            x * px - (3 + 7.5 * len(t)) if right else x * px,
            x * px if right else x * px + 3 + 7.5 * len(t),
        )
        for x, t, right in labels
    ]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(edges))
    layout = graph_layout(records, ["cpu_percent"], timeline=True)
    drawn = sorted((label.x, label.text) for label in layout.select({"type": Label}))
    assert drawn == [(x, text) for x, text, _ in labels]


def test_a_last_label_that_meets_the_one_before_joins_it() -> None:
    labels = timeline_labels([0, 1, 2], [0.0, 9.9, 9.95], 10.0)

    assert labels == [(0.0, "#0", False), (10.0, "#1\u20132", True)]


def test_several_records_without_timeline_are_overlaid() -> None:
    layout = graph_layout([known_record(0), known_record(1)], ["cpu_percent"])
    assert set(lines_of(layout)) == {"#0 cpu_percent", "#1 cpu_percent"}
    assert not [b for b in layout.select({"type": BoxAnnotation}) if b.name is not None]


def test_live_bundle() -> None:
    assert live_bundle(3, 0.4, None)["text/plain"] == "Cell 3 running: 0.4 s, no sample yet"
    snap = {name: values[-1] for name, values in known_record(gpus=1).samples.items()}
    bundle = live_bundle(3, 12.34, snap)
    assert bundle["text/plain"] == (
        "Cell 3 running: 12.3 s · CPU 25 % · RSS 2.0 MiB · I/O read 1.0 KiB, "
        "written 10.0 MiB · 2 processes, 6 threads · GPU 0 %"
    )
    assert "<script" not in bundle["text/html"] and "12.3 s" in bundle["text/html"]


def test_rates_are_drawn_as_steps_over_the_interval_they_cover() -> None:
    from jumper_proxy.plots import steps

    xs, ys = steps([0.0, 0.5, 1.0], [0.0, 80.0, 40.0])
    assert xs == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert ys == [0.0, 80.0, 80.0, 40.0, 40.0]
    nan = float("nan")
    xs, ys = steps([0.0, 1.0, 1.0, 1.5, 2.0], [0.0, 50.0, nan, 0.0, 30.0])
    assert xs[:3] == [0.0, 0.0, 1.0] and ys[:3] == [0.0, 50.0, 50.0]
    assert math.isnan(ys[3])  # the break between two cells stays a break
    assert (xs[4:], ys[4:]) == ([1.5, 1.5, 2.0], [0.0, 30.0, 30.0])  # nothing across the gap

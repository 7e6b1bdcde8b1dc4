"""The HTML report of ``jumper-proxy run --html``: one page, BokehJS once, every graph."""

from __future__ import annotations

import re
from typing import Any

from jumper_proxy.html_report import record_from_dict, report_html
from jumper_proxy.monitor import CellRecord
from jumper_proxy.report import ExecutedCell, build_rows


def _record(index: int, code: str, sampled: bool) -> dict[str, Any]:
    samples: dict[str, list[Any]] = {}
    if sampled:
        samples = {
            "time_s": [0.0, 0.5, 1.0],
            "cpu_percent": [0.0, 90.0, 95.0],
            "cpu_percent_per_core": [[0.0], [90.0], [95.0]],
            "memory_rss_bytes": [10, 20, 30],
            "memory_percent": [1.0, 1.0, 1.0],
            "io_read_bytes": [0, 0, 0],
            "io_write_bytes": [0, 0, 0],
            "io_read_count": [0, 0, 0],
            "io_write_count": [0, 0, 0],
            "num_procs": [1, 1, 1],
            "num_threads": [1, 1, 1],
            "gpu_util_percent": [[], [], []],
            "gpu_memory_bytes": [[], [], []],
        }
    return CellRecord(index, code, 1.0, 2.0, 1.0, "ok", samples).to_dict()


def test_the_report_has_the_table_and_every_sampled_cells_graphs_with_bokehjs_once() -> None:
    cells = [
        ExecutedCell(index=0, source="%%jumper_help", status="ok", wall_s=0.01),
        ExecutedCell(index=2, source="busy() # <script>", status="ok", wall_s=1.0),
        ExecutedCell(index=4, source="quick()", status="ok", wall_s=0.1),
        ExecutedCell(index=5, source="busy_again()", status="ok", wall_s=1.0),
    ]
    records = [
        _record(0, "busy() # <script>", True),
        _record(1, "quick()", False),
        _record(2, "busy_again()", True),
    ]

    page = report_html("my <notebook>.ipynb", build_rows(cells, records), records)

    assert page.startswith("<!DOCTYPE html>") and "<title>my &lt;notebook&gt;.ipynb" in page
    assert page.count("BEGIN bokeh.min.js") == 1
    assert page.count("embed_item(") == 3  # the timeline and the two sampled cells
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page
    assert page.count("<script") == page.count("</script>")
    assert "busy() # &lt;script&gt;" in page  # code is text, never markup
    for cell in (2, 4, 5):  # every monitored cell has a section the table links to
        assert f'<a href="#cell-{cell}">{cell}</a>' in page and f'id="cell-{cell}"' in page
    assert 'id="cell-0"' not in page  # a magic cell has no record
    assert "too short to sample" in page  # the quick cell: its summary, no graph


def test_a_single_cell_gets_no_timeline() -> None:
    cells = [ExecutedCell(index=0, source="busy()", status="ok", wall_s=1.0)]
    records = [_record(0, "busy()", True)]

    page = report_html("one.ipynb", build_rows(cells, records), records)

    assert page.count("embed_item(") == 1 and "back to back" not in page


def test_records_come_back_from_their_export() -> None:
    record = CellRecord(3, "x = 1", 1.0, 2.5, 1.5, "error", {}, samples_dropped=True)

    assert record_from_dict({**record.to_dict(), "tags": ["waiting"]}) == record

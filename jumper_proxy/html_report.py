"""The self-contained HTML report of ``jumper-proxy run --html``: the per-cell table, all
monitored cells on one time axis, and each monitored cell's code, summary and graphs.

One file that opens offline in any browser: the styles are inline and BokehJS is in the head
once; every graph is embedded without it (:func:`jumper_proxy.embed.layout_html`).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from jumper_proxy import __version__
from jumper_proxy.embed import bokehjs_script, layout_html
from jumper_proxy.monitor.store import CellRecord, sample_count
from jumper_proxy.plots import graph_layout, summary_text
from jumper_proxy.report import TEXT_COLUMNS, CellRow, table_cells

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
pre { background: #f7f7f7; padding: 6px 8px; overflow-x: auto; }
.note { color: #666; font-size: 0.9em; }
"""


def report_html(title: str, rows: Sequence[CellRow], records: Sequence[Mapping[str, Any]]) -> str:
    """The report of a run of notebook ``title``: its table rows and the proxy's records."""
    cells = {record.index: record for record in map(record_from_dict, records)}
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">Executed through jumper-proxy '
        f"{html.escape(__version__)} on {time.strftime('%Y-%m-%d %H:%M')}. "
        "<i>cell</i> is the position in the notebook (0-based), <i>run</i> the index the "
        "monitoring magics use (0-based, in the order cells were monitored); the graphs and "
        "summaries number cells by run. CPU: 100 % is one core.</p>",
        _table(rows),
    ]
    measured = [cells[row.run_index] for row in rows if row.run_index in cells]
    sampled = [record for record in measured if sample_count(record.samples)]
    if len(sampled) > 1:
        layout = graph_layout(measured, timeline=True)
        if layout is not None:
            parts += ["<h2>All monitored cells, back to back</h2>", layout_html(layout, None)]
    for row in rows:
        record = cells.get(row.run_index) if row.run_index is not None else None
        if record is not None:
            parts += _cell_section(row, record)
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}: jumper-proxy report</title>\n"
        f"<style>{_STYLE}</style>\n{bokehjs_script()}\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def record_from_dict(data: Mapping[str, Any]) -> CellRecord:
    """A record as the proxy exports it (``CellRecord.to_dict``) back into a record."""
    known = {f.name for f in fields(CellRecord)}
    return CellRecord(**{name: value for name, value in data.items() if name in known})


def _table(rows: Sequence[CellRow]) -> str:
    header, body = table_cells(rows)
    text = [name in TEXT_COLUMNS for name in header]

    def row_html(tag: str, values: list[str], link: str | None = None) -> str:
        cells = []
        for i, value in enumerate(values):
            shown = html.escape(value)
            if link is not None and header[i] == "cell":
                shown = f'<a href="#{link}">{shown}</a>'
            cells.append(f"<{tag}{' class=text' if text[i] else ''}>{shown}</{tag}>")
        return "<tr>" + "".join(cells) + "</tr>"

    lines = [row_html("th", header)]
    for row, values in zip(rows, body, strict=True):
        lines.append(row_html("td", values, _anchor(row) if row.run_index is not None else None))
    return "<table>\n" + "\n".join(lines) + "\n</table>"


def _anchor(row: CellRow) -> str:
    return f"cell-{row.index}"


def _cell_section(row: CellRow, record: CellRecord) -> list[str]:
    parts = [
        f'<h2 id="{_anchor(row)}">Run #{row.run_index}, notebook cell {row.index}: '
        f"<code>{html.escape(row.code)}</code></h2>",
        f"<pre>{html.escape(record.code.rstrip())}</pre>",
        f"<pre>{html.escape(summary_text(record))}</pre>",
    ]
    layout = graph_layout([record])
    if layout is not None:
        parts.append(layout_html(layout, None))
    return parts

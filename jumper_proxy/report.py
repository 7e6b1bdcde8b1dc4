"""The per-cell performance table of ``jumper-proxy run``: pure functions from executed cells
and the proxy's perf records to table rows, text, JSON and each cell's ``metadata.jumper``.

Perf records are the ``records`` of a ``jumper_perfdata_reply``. Each record is matched to an
executed cell by its code, in execution order (a record the proxy did not keep leaves its cell's
perf columns empty). A row names the cell twice: ``index`` is its position in the notebook
(0-based, counting every cell), ``run_index`` the index the proxy's magics know it by (0-based,
in the order cells were monitored; ``None`` for a cell the proxy answered itself). The sampled
series are summarised per cell:

- CPU %: mean and maximum of ``cpu_percent`` (the kernel's process tree, so above 100 when
  several cores are busy);
- peak memory: maximum of ``memory_rss_bytes``;
- I/O read/written: ``io_read_bytes``/``io_write_bytes`` are cumulative counters of the tree;
  the bytes of the cell are the sum of their increases between samples (a drop, when a process
  of the tree exits, is not counted as negative I/O);
- GPU: maximum utilisation over devices and samples, and peak memory summed over devices.

A record's ``tags`` (what kind of work the cell did), where the proxy gives them, are passed on
as they are.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from jumper_proxy.monitor.store import interval_mean


@dataclass(frozen=True)
class ExecutedCell:
    """A code cell as the client saw it run."""

    index: int
    source: str
    status: str
    #: seconds, from the kernel's busy status to its execute reply; ``None`` if unknown
    wall_s: float | None


@dataclass(frozen=True)
class CellRow:
    """One row of the table; ``None`` means no data."""

    index: int
    run_index: int | None
    status: str
    wall_s: float | None
    cpu_percent_mean: float | None
    cpu_percent_max: float | None
    memory_peak_bytes: int | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    gpu_util_percent_max: float | None
    gpu_memory_peak_bytes: int | None
    code: str
    #: the record's ``tags`` as the proxy gave them; ``None`` when it gave none
    tags: Any = None


def wall_time_from_metadata(execution: Mapping[str, Any]) -> float | None:
    """Seconds between ``iopub.status.busy`` and ``shell.execute_reply`` in a cell's
    ``metadata.execution`` (as nbclient records them), or ``None`` if either is missing."""
    start = _parse_time(execution.get("iopub.status.busy"))
    end = _parse_time(execution.get("shell.execute_reply"))
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def build_rows(
    cells: Sequence[ExecutedCell], records: Sequence[Mapping[str, Any]] | None
) -> list[CellRow]:
    """One row per executed cell, with perf columns from the record matched to it."""
    matched = _match_records(cells, records or [])
    return [_row(cell, record) for cell, record in zip(cells, matched, strict=True)]


def _match_records(
    cells: Sequence[ExecutedCell], records: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any] | None]:
    matched: list[Mapping[str, Any] | None] = []
    position = 0
    for cell in cells:
        found = None
        for offset, record in enumerate(records[position:]):
            code = record.get("code")
            if isinstance(code, str) and code.strip() == cell.source.strip():
                found = record
                position += offset + 1
                break
        matched.append(found)
    return matched


def _row(cell: ExecutedCell, record: Mapping[str, Any] | None) -> CellRow:
    samples: Mapping[str, Any] = {}
    wall_s = cell.wall_s
    run_index = None
    if record is not None:
        duration = record.get("duration")
        if isinstance(duration, int | float) and math.isfinite(duration):
            wall_s = float(duration)
        recorded = record.get("samples")
        if isinstance(recorded, Mapping):
            samples = recorded
        index = record.get("index")
        run_index = index if isinstance(index, int) and not isinstance(index, bool) else None
    cpu = _numbers(samples.get("cpu_percent"))
    times = _numbers(samples.get("time_s"))
    memory = _numbers(samples.get("memory_rss_bytes"))
    gpu_util = [max(row) for row in _device_rows(samples.get("gpu_util_percent")) if row]
    gpu_memory = [sum(row) for row in _device_rows(samples.get("gpu_memory_bytes")) if row]
    return CellRow(
        index=cell.index,
        run_index=run_index,
        status=cell.status,
        wall_s=wall_s,
        cpu_percent_mean=_mean(times, cpu),
        cpu_percent_max=max(cpu) if cpu else None,
        memory_peak_bytes=int(max(memory)) if memory else None,
        io_read_bytes=_increase(samples.get("io_read_bytes")),
        io_write_bytes=_increase(samples.get("io_write_bytes")),
        gpu_util_percent_max=max(gpu_util) if gpu_util else None,
        gpu_memory_peak_bytes=int(max(gpu_memory)) if gpu_memory else None,
        code=_first_line(cell.source),
        tags=record.get("tags") if record is not None else None,
    )


def _mean(times: list[float], cpu: list[float]) -> float | None:
    """Time-weighted over the intervals the samples cover (the row at time 0 is the baseline)."""
    if not cpu:
        return None
    return interval_mean(times, cpu) if len(times) == len(cpu) else sum(cpu) / len(cpu)


def _numbers(values: object) -> list[float]:
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _device_rows(values: object) -> list[list[float]]:
    if not isinstance(values, list):
        return []
    return [_numbers(row) for row in values]


def _increase(values: object) -> int | None:
    counters = _numbers(values)
    if not counters:
        return None
    return int(sum(max(0.0, b - a) for a, b in itertools.pairwise(counters)))


def _first_line(source: str, width: int = 40) -> str:
    line = next((text.strip() for text in source.splitlines() if text.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def format_bytes(count: int | None) -> str:
    """``1536`` → ``1.5 KiB``; ``None`` → ``-``."""
    if count is None:
        return "-"
    if abs(count) < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def has_gpu(rows: Iterable[CellRow]) -> bool:
    """Whether any row carries GPU data (the GPU columns are shown only then)."""
    return any(
        row.gpu_util_percent_max is not None or row.gpu_memory_peak_bytes is not None
        for row in rows
    )


def format_tags(tags: Any) -> str:
    """A record's tags in one short line: a list joined with commas, anything else as JSON."""
    if tags is None:
        return "-"
    if isinstance(tags, list | tuple):
        return ", ".join(str(tag) for tag in tags) or "-"
    return tags if isinstance(tags, str) else json.dumps(tags, sort_keys=True)


def table_cells(rows: Sequence[CellRow]) -> tuple[list[str], list[list[str]]]:
    """The table's header and its rows as text; GPU and tag columns only if any row has
    them. ``cell`` is the notebook position, ``run`` the magics' index."""
    gpu = has_gpu(rows)
    tagged = any(row.tags is not None for row in rows)
    header = ["cell", "run", "status", "wall s", "CPU% mean", "CPU% max", "peak mem", "read"]
    header.append("written")
    if gpu:
        header += ["GPU% max", "GPU mem"]
    if tagged:
        header.append("tags")
    header.append("code")
    lines = []
    for row in rows:
        cells = [
            str(row.index),
            "-" if row.run_index is None else str(row.run_index),
            row.status,
            _number(row.wall_s, 2),
            _number(row.cpu_percent_mean, 1),
            _number(row.cpu_percent_max, 1),
            format_bytes(row.memory_peak_bytes),
            format_bytes(row.io_read_bytes),
            format_bytes(row.io_write_bytes),
        ]
        if gpu:
            cells += [_number(row.gpu_util_percent_max, 1), format_bytes(row.gpu_memory_peak_bytes)]
        if tagged:
            cells.append(format_tags(row.tags))
        cells.append(row.code)
        lines.append(cells)
    return header, lines


#: columns of :func:`table_cells` that hold text (left-aligned); the others are numbers
TEXT_COLUMNS = frozenset({"status", "tags", "code"})


def format_table(rows: Sequence[CellRow]) -> str:
    """The rows as an aligned text table with a header line (see :func:`table_cells`)."""
    header, body = table_cells(rows)
    table = [header, *body]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for line in table:
        parts = [
            text.ljust(width) if header[i] in TEXT_COLUMNS else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def rows_to_json(rows: Sequence[CellRow]) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts, raw numbers (seconds, percent, bytes) and ``null``;
    ``tags`` only where the proxy gave them."""
    return [_without_missing_tags(asdict(row)) for row in rows]


def cell_metadata(row: CellRow) -> dict[str, Any]:
    """The perf summary of one cell for its ``metadata.jumper`` in the executed notebook: the
    row without what the cell itself says (its position and code) and without the figures
    that are not known, numbers rounded to what they can tell."""
    summary = asdict(row)
    del summary["index"], summary["code"]
    return {
        name: round(value, 3) if isinstance(value, float) else value
        for name, value in summary.items()
        if value is not None
    }


def _without_missing_tags(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("tags") is None:
        data.pop("tags", None)
    return data

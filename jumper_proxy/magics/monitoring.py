"""Magics over the monitor's records: code history, graphs, exports and the live view.

Cell indices are 0-based, in the order cells were monitored, as ``%%display_code_history``
shows them. Exports are written by the user's kernel, so files land in its working directory
and variables in its namespace.
"""

from __future__ import annotations

import html
import json
import keyword
import os
import time
from pathlib import Path
from typing import Any

from jumper_proxy import kernelside
from jumper_proxy.api import Magic, MagicContext, MagicTable, MonitorControls
from jumper_proxy.errors import MagicError
from jumper_proxy.monitor.store import METRICS, CellRecord


async def _records(ctx: MagicContext) -> MonitorControls:
    monitor = ctx.services.monitor
    await monitor.drain()
    return monitor


def parse_index(args: str, magic: str) -> tuple[int, str]:
    """The cell index at the start of ``args`` and the rest of the line."""
    head, _, rest = args.strip().partition(" ")
    if not head:
        raise MagicError(f"%%{magic} needs a cell index, e.g. %%{magic} 0")
    try:
        index = int(head)
    except ValueError:
        raise MagicError(f"%%{magic}: {head!r} is not a cell index (0, 1, 2, ...)") from None
    if index < 0:
        raise MagicError(f"%%{magic}: cell indices start at 0, not {index}")
    return index, rest


def parse_name(args: str, magic: str) -> str:
    """A Python identifier given as the magic's only argument."""
    name = args.strip()
    if not name:
        raise MagicError(f"%%{magic} needs a name, e.g. %%{magic} perf")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise MagicError(f"%%{magic}: {name!r} is not a valid Python name")
    return name


def history_bundle(records: list[CellRecord]) -> dict[str, Any]:
    """``%%display_code_history``: index, start time, duration and first line of each cell."""
    if not records:
        raise MagicError("No cell has been monitored yet.")
    rows = [
        (
            str(r.index),
            time.strftime("%H:%M:%S", time.localtime(r.start)),
            f"{r.duration:.2f} s",
            r.status,
            r.first_line,
        )
        for r in records
    ]
    head = ("index", "started", "duration", "status", "code")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in [head, *rows]
    ]
    cells = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in row[:4])
        + f"<td><code>{html.escape(row[4])}</code></td></tr>"
        for row in rows
    )
    table = (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{cells}</tbody></table>"
    )
    return {"text/plain": "\n".join(lines), "text/html": table}


def _export_code(records: list[CellRecord]) -> str:
    return json.dumps([{"index": r.index, "code": r.code} for r in records])


def _export_perf(records: list[CellRecord]) -> str:
    cells = []
    for record in records:
        data = record.to_dict()
        del data["code"]
        cells.append(data)
    return json.dumps({"metrics": ["time_s", *METRICS], "cells": cells})


async def display_code_history(ctx: MagicContext, args: str, body: str) -> None:
    monitor = await _records(ctx)
    ctx.out.display(history_bundle(monitor.store.records()))


async def display_code_for_index(ctx: MagicContext, args: str, body: str) -> None:
    index, rest = parse_index(args, "display_code_for_index")
    if rest:
        raise MagicError(f"%%display_code_for_index takes one cell index, not {args!r}")
    monitor = await _records(ctx)
    ctx.out.stream(monitor.store.get(index).code.rstrip("\n") + "\n")


async def display_graph_for_last(ctx: MagicContext, args: str, body: str) -> None:
    from jumper_proxy.plots import graph_bundle, parse_metric_list

    metrics = parse_metric_list(args)
    monitor = await _records(ctx)
    ctx.out.display(graph_bundle([monitor.store.last()], metrics, cell_id=ctx.cell_id))


async def display_graph_for_index(ctx: MagicContext, args: str, body: str) -> None:
    from jumper_proxy.plots import graph_bundle, parse_metric_list

    index, rest = parse_index(args, "display_graph_for_index")
    metrics = parse_metric_list(rest)
    monitor = await _records(ctx)
    ctx.out.display(graph_bundle([monitor.store.get(index)], metrics, cell_id=ctx.cell_id))


async def display_graph_for_all(ctx: MagicContext, args: str, body: str) -> None:
    from jumper_proxy.plots import graph_bundle, parse_metric_list

    metrics = parse_metric_list(args)
    monitor = await _records(ctx)
    records = monitor.store.records()
    if not records:
        monitor.store.last()  # raises the store's own "nothing recorded yet" error
    ctx.out.display(graph_bundle(records, metrics, timeline=True, cell_id=ctx.cell_id))


async def perfdata_to_variable(ctx: MagicContext, args: str, body: str) -> None:
    name = parse_name(args, "perfdata_to_variable")
    monitor = await _records(ctx)
    await ctx.run_hidden(*kernelside.define_perfdata(name, json.dumps(monitor.export())))
    ctx.out.stream(f"{name}: performance data of {len(monitor.store)} cells\n")


async def perfdata_to_json(ctx: MagicContext, args: str, body: str) -> None:
    name = parse_name(args, "perfdata_to_json")
    monitor = await _records(ctx)
    records = monitor.store.records()
    files = [
        (f"{name}_perfdata.json", _export_perf(records), None),
        (f"{name}_code.json", _export_code(records), None),
    ]
    kernel = ctx.services.kernel()
    if kernel.ipython:
        paths = (await ctx.run_hidden(*kernelside.write_files(files)))["paths"]
    else:  # the proxy writes them itself, where the kernel runs
        paths = _write_beside(kernel.pid, files)
    for path in paths:
        ctx.out.stream(f"wrote {path}\n")


def _write_beside(pid: int | None, files: list[tuple[str, str, None]]) -> list[str]:
    """Write ``files`` in the working directory of process ``pid`` (the kernel)."""
    try:
        where = Path(os.readlink(f"/proc/{pid}/cwd")) if pid is not None else Path.cwd()
    except OSError:
        where = Path.cwd()
    paths = []
    for name, text, _ in files:
        path = where / name
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise MagicError(f"Cannot write {path}: {exc.strerror}") from None
        paths.append(str(path))
    return paths


async def monitor_live(ctx: MagicContext, args: str, body: str) -> None:
    monitor = ctx.services.monitor
    choice = args.strip().lower()
    if choice not in ("on", "off", ""):
        raise MagicError(f"%%monitor_live takes 'on' or 'off', not {args.strip()!r}")
    if choice:
        monitor.live = choice == "on"
    state = "on" if monitor.live else "off"
    ctx.out.stream(
        f"live view {state}: a cell running longer than 2 s shows one line with its current "
        "CPU, memory, I/O, processes and threads, updated every second\n"
    )


def register(table: MagicTable) -> None:
    metrics = "[METRIC ...]"
    for magic in (
        Magic(
            "display_code_history",
            display_code_history,
            "index, start, duration and first line of each monitored cell",
        ),
        Magic(
            "display_code_for_index", display_code_for_index, "the code of monitored cell N", "N"
        ),
        Magic(
            "display_graph_for_last",
            display_graph_for_last,
            "graphs of the last monitored cell",
            metrics,
        ),
        Magic(
            "display_graph_for_index",
            display_graph_for_index,
            "graphs of monitored cell N",
            f"N {metrics}",
        ),
        Magic(
            "display_graph_for_all",
            display_graph_for_all,
            "all monitored cells on one time axis",
            metrics,
        ),
        Magic(
            "perfdata_to_variable",
            perfdata_to_variable,
            "the performance data as a list in the kernel's namespace",
            "NAME",
            needs_python=True,
        ),
        Magic(
            "perfdata_to_json",
            perfdata_to_json,
            "write NAME_perfdata.json and NAME_code.json where the kernel runs",
            "NAME",
        ),
        Magic(
            "monitor_live", monitor_live, "one updating line of figures under long cells", "on|off"
        ),
    ):
        table.add(magic)

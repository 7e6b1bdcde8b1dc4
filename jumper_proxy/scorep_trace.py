"""Score-P's OTF2 trace as a timeline small enough to draw: :func:`read_trace`.

The reader is the OTF2 Python bindings (``import otf2``: the ``otf2`` package, or the copy
Score-P installs, found through ``otf2-config --pythonpath``), imported on first use. Every
``Enter``/``Leave`` pair of a location (a thread of a process or rank) becomes a bar: its
region, its start and end in seconds from the start of the trace, and its depth in the call
stack. A large trace is reduced while it is read, and the timeline says how:

* calls shorter than ``1/resolution`` of the trace that follow one another in the same row
  (location and depth) are merged into one bar that counts them (and names the regions: one,
  or the first and how many others);
* at most ``max_bars`` bars are kept, the longest;
* at most ``max_events`` events are read.

Trace-buffer flushes (``BufferFlush`` events, when ``SCOREP_TOTAL_MEMORY`` was too small) are
kept as marks: the time they took is in the trace.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from jumper_proxy.errors import MagicError

TRACE_FILE = "traces.otf2"


class TraceError(MagicError):
    """A trace that is not there or cannot be read; the message says why."""

    ename = "ScorepTraceError"


@dataclass
class Timeline:
    """Bars per location, as columns (one entry per bar), and what the reading left out."""

    path: Path
    locations: list[str]
    duration: float
    #: per bar: its location's index, depth, start and end (s), region, and events merged in it
    row: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    region: list[str] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    #: (location index, start, end) of each trace-buffer flush
    flushes: list[tuple[int, float, float]] = field(default_factory=list)
    calls: int = 0
    reduced: list[str] = field(default_factory=list)
    #: the regions of each merged bar that holds several (by bar index, while reading)
    names: dict[int, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.start)


def trace_path(experiment: Path) -> Path:
    """The trace anchor of an experiment directory (or the file itself)."""
    return experiment if experiment.suffix == ".otf2" else experiment / TRACE_FILE


def read_trace(
    experiment: Path,
    *,
    max_bars: int = 20_000,
    max_events: int = 2_000_000,
    resolution: int = 4_000,
) -> Timeline:
    """Read the trace of ``experiment`` (a directory, or ``traces.otf2``) into a timeline."""
    path = trace_path(experiment)
    if not path.is_file():
        where = "" if path.parent.is_dir() else f" ({path.parent} does not exist)"
        raise TraceError(
            f"No trace in {path.parent}{where}: Score-P writes traces.otf2 when "
            "SCOREP_ENABLE_TRACING is true; set it with %%scorep_env (SCOREP_ENABLE_TRACING=1) "
            "before the instrumented cell."
        )
    otf2 = _otf2()
    try:
        with otf2.reader.open(str(path)) as trace:
            return _read(trace, path, max_bars, max_events, resolution)
    except TraceError:
        raise
    except Exception as exc:  # the bindings raise their own errors and OSError
        raise TraceError(f"Cannot read {path}: {type(exc).__name__}: {exc}") from None


def _read(trace: Any, path: Path, max_bars: int, max_events: int, resolution: int) -> Timeline:
    clock = trace.definitions.clock_properties
    ticks = float(clock.timer_resolution)
    origin = clock.global_offset
    locations = list(trace.definitions.locations)
    groups = {location.group.name for location in locations}
    names = [
        f"{location.group.name} · {location.name}" if len(groups) > 1 else location.name
        for location in locations
    ]
    index = {id(location): number for number, location in enumerate(locations)}
    timeline = Timeline(path, names, clock.trace_length / ticks)
    shortest = timeline.duration / resolution
    stacks: dict[int, list[tuple[str, float]]] = {}
    last: dict[tuple[int, int], int] = {}  # (location, depth) -> its latest bar
    for events, (location, event) in enumerate(trace.events, 1):
        if events > max_events:
            timeline.reduced.append(f"only the first {max_events:,} events were read")
            break
        kind = type(event).__name__
        row = index.get(id(location), 0)
        when = (event.time - origin) / ticks
        if kind == "Enter":
            stacks.setdefault(row, []).append((event.region.name, when))
        elif kind == "Leave" and stacks.get(row):
            region, began = stacks[row].pop()
            timeline.calls += 1
            _add(timeline, last, shortest, row, len(stacks[row]), region, began, when)
        elif kind == "BufferFlush":
            timeline.flushes.append((row, when, (event.stop_time - origin) / ticks))
    merged = timeline.calls - len(timeline)
    if merged:
        timeline.reduced.append(
            f"{merged:,} calls shorter than {shortest * 1e6:.1f} µs were merged with their "
            "neighbours into bars that count them"
        )
    timeline.names.clear()
    if len(timeline) > max_bars:
        _keep_longest(timeline, max_bars)
    return timeline


def _add(
    timeline: Timeline,
    last: dict[tuple[int, int], int],
    shortest: float,
    row: int,
    depth: int,
    region: str,
    start: float,
    end: float,
) -> None:
    key = (row, depth)
    previous = last.get(key)
    if (
        previous is not None
        and end - start < shortest
        and start - timeline.end[previous] < shortest
        and timeline.end[previous] - timeline.start[previous] < shortest * 4
    ):
        timeline.end[previous] = end
        timeline.merged[previous] += 1
        names = timeline.names.setdefault(previous, [timeline.region[previous]])
        if region not in names:
            names.append(region)
            timeline.region[previous] = f"{names[0]} and {len(names) - 1} more regions"
        return
    last[key] = len(timeline.start)
    timeline.row.append(row)
    timeline.depth.append(depth)
    timeline.start.append(start)
    timeline.end.append(end)
    timeline.region.append(region)
    timeline.merged.append(1)


def _keep_longest(timeline: Timeline, max_bars: int) -> None:
    order = sorted(
        range(len(timeline)), key=lambda i: timeline.start[i] - timeline.end[i]
    )  # longest first
    keep = sorted(order[:max_bars])
    dropped = len(timeline) - max_bars
    for name in ("row", "depth", "start", "end", "region", "merged"):
        column = getattr(timeline, name)
        setattr(timeline, name, [column[i] for i in keep])
    timeline.reduced.append(f"the {dropped:,} shortest bars were left out ({max_bars:,} kept)")


def _otf2() -> ModuleType:
    """The OTF2 Python bindings: installed, or Score-P's own copy."""
    try:
        return importlib.import_module("otf2")
    except ImportError:
        pass
    config = shutil.which("otf2-config")
    if config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [config, "--pythonpath"], capture_output=True, text=True, timeout=10
            )
            where = done.stdout.strip()
            if done.returncode == 0 and where and Path(where).is_dir():
                sys.path.append(where)
                with contextlib.suppress(ImportError):
                    return importlib.import_module("otf2")
                sys.path.remove(where)
    raise TraceError(
        "Reading OTF2 traces needs the OTF2 Python bindings in jumper-proxy's environment: "
        "pip install otf2, or put Score-P's bin directory (otf2-config) on PATH."
    )

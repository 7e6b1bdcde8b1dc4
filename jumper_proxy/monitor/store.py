"""Per-cell performance records: the export schema, the bounded in-memory store, lookups.

Records are plain data (``CellRecord``) so that magics, plots and exports are pure functions
of them. Memory stays bounded two ways: each cell's samples are already bounded by the sampler
(downsampling), and the store keeps at most ``max_records`` records and ``max_sample_values``
sample values in total; beyond that the samples of the oldest records are dropped first (their
index, code and timing stay), then the oldest records themselves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jumper_proxy.errors import MagicError, MonitorError

__all__ = [
    "METRICS",
    "SAMPLE_COLUMNS",
    "CellRecord",
    "PerfStore",
    "downsample",
    "finish_record",
    "interval_mean",
    "merge_samples",
    "sample_count",
]

#: Plottable metric names of the export schema, in schema order.
METRICS: tuple[str, ...] = (
    "cpu_percent",
    "cpu_percent_per_core",
    "memory_rss_bytes",
    "memory_percent",
    "io_read_bytes",
    "io_write_bytes",
    "io_read_count",
    "io_write_count",
    "num_procs",
    "num_threads",
    "gpu_util_percent",
    "gpu_memory_bytes",
)

#: Every column of a record's ``samples``: the time axis first, then the metrics.
SAMPLE_COLUMNS: tuple[str, ...] = ("time_s", *METRICS)

# How columns combine when two neighbouring samples become one (see merge_samples); the
# others (time and the cumulative I/O counters) keep the later value.
_RATES = frozenset({"cpu_percent", "cpu_percent_per_core", "gpu_util_percent"})
_PEAKS = frozenset(
    {"memory_rss_bytes", "memory_percent", "num_procs", "num_threads", "gpu_memory_bytes"}
)


@dataclass
class CellRecord:
    """What was measured for one monitored cell.

    ``index`` is 0-based in monitoring order; ``start`` and ``end`` are epoch seconds;
    ``duration`` is in seconds; ``samples`` maps each name of :data:`SAMPLE_COLUMNS` to one
    value per sample (lists for the per-core and per-GPU columns), or is empty when the cell
    had too few samples or its samples were dropped to bound memory (``samples_dropped``).
    """

    index: int
    code: str
    start: float
    end: float
    duration: float
    status: str
    samples: dict[str, list[Any]] = field(default_factory=dict)
    samples_dropped: bool = False

    @property
    def first_line(self) -> str:
        """The first non-blank line of the code, for one-line listings."""
        for line in self.code.splitlines():
            if line.strip():
                return line
        return ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (lists copied, so the record cannot be changed through it)."""
        return {
            "index": self.index,
            "code": self.code,
            "start": self.start,
            "end": self.end,
            "duration": self.duration,
            "status": self.status,
            "samples": {
                name: [list(v) if isinstance(v, list) else v for v in values]
                for name, values in self.samples.items()
            },
            "samples_dropped": self.samples_dropped,
        }


def interval_mean(times: Sequence[float], values: Sequence[float]) -> float:
    """Mean of per-interval rates (``cpu_percent``...), each weighted by the interval that ends
    at its ``time_s``; the baseline row at time 0 weighs nothing."""
    total = weight = 0.0
    before = 0.0
    for t, v in zip(times, values, strict=False):
        total += v * (t - before)
        weight += t - before
        before = t
    return total / weight if weight > 0 else (sum(values) / len(values) if values else 0.0)


def sample_count(samples: dict[str, list[Any]]) -> int:
    """How many samples a columnar sample dict holds."""
    return len(samples.get("time_s", ()))


def finish_record(
    *,
    index: int,
    code: str,
    start: float,
    end: float,
    status: str,
    samples: dict[str, list[Any]],
    reports_min: int,
    duration: float | None = None,
) -> CellRecord:
    """Build the record of a finished cell from the sampler's output.

    The first row, at time 0, is the state at the cell's start and does not count as a report.
    A cell with fewer than ``reports_min`` samples (``JUMPER_REPORTS_MIN``) is still timed but
    keeps no samples. ``duration`` defaults to ``end - start``; pass a monotonic-clock duration
    when there is one.
    """
    times = samples.get("time_s", [])
    periodic = len(times) - 1 if times and times[0] == 0 else len(times)
    kept = samples if periodic >= max(reports_min, 1) else {}
    return CellRecord(
        index=index,
        code=code,
        start=start,
        end=end,
        duration=end - start if duration is None else duration,
        status=status,
        samples=kept,
    )


class PerfStore:
    """The records of all monitored cells of a session, bounded in memory."""

    def __init__(self, max_records: int = 10_000, max_sample_values: int = 5_000_000) -> None:
        if max_records < 1 or max_sample_values < 0:
            raise MonitorError("a performance store needs max_records >= 1, max_sample_values >= 0")
        self.max_records = max_records
        self.max_sample_values = max_sample_values
        self._records: deque[CellRecord] = deque()
        self._values: dict[int, int] = {}
        self._total_values = 0
        self._next_index = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def next_index(self) -> int:
        """The index the next added record must carry."""
        return self._next_index

    def add(self, record: CellRecord) -> None:
        """Append ``record`` (whose index must be :attr:`next_index`), then enforce the bounds."""
        if record.index != self._next_index:
            raise MonitorError(
                f"record index {record.index} is out of order: expected {self._next_index}"
            )
        self._records.append(record)
        self._next_index += 1
        count = _count_values(record.samples)
        self._values[record.index] = count
        self._total_values += count
        while len(self._records) > self.max_records:
            dropped = self._records.popleft()
            self._total_values -= self._values.pop(dropped.index)
        for old in self._records:
            if self._total_values <= self.max_sample_values:
                break
            if old.samples:
                self._total_values -= self._values[old.index]
                self._values[old.index] = 0
                old.samples = {}
                old.samples_dropped = True

    def records(self) -> list[CellRecord]:
        """All kept records, oldest first."""
        return list(self._records)

    def last(self) -> CellRecord:
        """The most recent record; :class:`MagicError` when nothing was recorded yet."""
        if not self._records:
            raise MagicError(_NOTHING_YET)
        return self._records[-1]

    def get(self, index: int) -> CellRecord:
        """The record with ``index``; :class:`MagicError` saying which indices exist otherwise."""
        if not self._records:
            raise MagicError(_NOTHING_YET)
        first = self._records[0].index
        last = self._records[-1].index
        if first <= index <= last:
            return self._records[index - first]
        if 0 <= index < first:
            raise MagicError(
                f"Cell {index} is no longer kept: the store keeps the last {self.max_records} "
                f"cells (indices {first} to {last})."
            )
        raise MagicError(
            f"No monitored cell with index {index}: indices run from {first} to {last}."
        )


def merge_samples(
    columns: dict[str, list[Any]], i: int, later: dict[str, Any], before: float
) -> dict[str, Any]:
    """Sample ``i`` of ``columns`` and the next sample ``later`` (a row) as one sample.

    Each sample describes the interval since the previous one, ``before`` being the time the
    interval of sample ``i`` started. Rates become time-weighted means over both intervals,
    peaks (memory, counts) keep the maximum, time and cumulative I/O counters the later value.
    """
    t1 = columns["time_s"][i]
    w1, w2 = t1 - before, later["time_s"] - t1
    merged: dict[str, Any] = {}
    for name in SAMPLE_COLUMNS:
        a, b = columns[name][i], later[name]
        if name in _RATES:
            merged[name] = _combine(a, b, lambda x, y: _weighted(x, y, w1, w2))
        elif name in _PEAKS:
            merged[name] = _combine(a, b, max)
        else:
            merged[name] = b
    return merged


def downsample(columns: dict[str, list[Any]]) -> None:
    """Merge neighbouring pairs of samples in place, halving their number.

    Evenly spaced samples stay evenly spaced at twice the interval; peaks survive.
    """
    times = columns["time_s"]
    n = len(times)
    rows: list[dict[str, Any]] = []
    before = 0.0
    for i in range(0, n - 1, 2):
        later = {name: columns[name][i + 1] for name in SAMPLE_COLUMNS}
        rows.append(merge_samples(columns, i, later, before))
        before = times[i + 1]
    if n % 2:
        rows.append({name: columns[name][n - 1] for name in SAMPLE_COLUMNS})
    for name in SAMPLE_COLUMNS:
        columns[name][:] = [row[name] for row in rows]


def _combine(a: Any, b: Any, fn: Callable[[Any, Any], Any]) -> Any:
    if isinstance(a, list):
        return [fn(x, y) for x, y in zip(a, b, strict=True)] if len(a) == len(b) else b
    return fn(a, b)


def _weighted(x: float, y: float, w1: float, w2: float) -> float:
    return (x * w1 + y * w2) / (w1 + w2) if w1 + w2 > 0 else (x + y) / 2


_NOTHING_YET = "No cell has been monitored yet: run a cell first, then ask for its data."


def _count_values(samples: dict[str, list[Any]]) -> int:
    return sum(len(v) if isinstance(v, list) else 1 for values in samples.values() for v in values)

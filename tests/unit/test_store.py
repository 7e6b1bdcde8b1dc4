"""Cell records, the bounded store and the sample-merging rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jumper_proxy.errors import MagicError, MonitorError
from jumper_proxy.monitor import SAMPLE_COLUMNS, CellRecord, PerfStore, finish_record
from jumper_proxy.monitor.store import downsample, merge_samples


def columns(n: int, **overrides: list[Any]) -> dict[str, list[Any]]:
    """``n`` evenly spaced samples (0.5 s apart) with simple distinct values."""
    cols: dict[str, list[Any]] = {
        "time_s": [0.5 * (i + 1) for i in range(n)],
        "cpu_percent": [float(10 * i) for i in range(n)],
        "cpu_percent_per_core": [[float(i), 2.0 * i] for i in range(n)],
        "memory_rss_bytes": [1000 + i for i in range(n)],
        "memory_percent": [10.0 + i for i in range(n)],
        "io_read_bytes": [100 * i for i in range(n)],
        "io_write_bytes": [200 * i for i in range(n)],
        "io_read_count": [i for i in range(n)],
        "io_write_count": [2 * i for i in range(n)],
        "num_procs": [1 + i % 3 for i in range(n)],
        "num_threads": [4 + i % 5 for i in range(n)],
        "gpu_util_percent": [[] for _ in range(n)],
        "gpu_memory_bytes": [[] for _ in range(n)],
    }
    cols.update(overrides)
    return cols


def record(index: int, n: int = 3, code: str = "x = 1") -> CellRecord:
    return finish_record(
        index=index,
        code=code,
        start=1000.0 + index,
        end=1001.5 + index,
        status="ok",
        samples=columns(n),
        reports_min=2,
    )


def test_a_cell_with_too_few_samples_is_timed_without_samples() -> None:
    short = finish_record(
        index=0, code="pass", start=10.0, end=10.25, status="ok", samples=columns(1), reports_min=2
    )
    assert short.samples == {} and short.duration == pytest.approx(0.25)
    kept = finish_record(
        index=1,
        code="pass",
        start=10.0,
        end=11.0,
        status="error",
        samples=columns(2),
        reports_min=2,
        duration=0.9,
    )
    assert kept.samples["time_s"] == [0.5, 1.0] and kept.duration == 0.9
    assert kept.status == "error"


def test_to_dict_is_json_ready_and_a_copy() -> None:
    rec = record(0, code="\n\nimport time\ntime.sleep(1)\n")
    data = rec.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert set(data["samples"]) == set(SAMPLE_COLUMNS)
    data["samples"]["cpu_percent_per_core"][0].append(99.0)
    assert rec.samples["cpu_percent_per_core"][0] == [0.0, 0.0]
    assert rec.first_line == "import time"


def test_lookups_and_their_errors() -> None:
    store = PerfStore()
    with pytest.raises(MagicError, match="No cell has been monitored yet"):
        store.last()
    with pytest.raises(MagicError, match="No cell has been monitored yet"):
        store.get(0)
    for i in range(3):
        assert store.next_index == i
        store.add(record(i))
    assert len(store) == 3 and store.last().index == 2 and store.get(1).index == 1
    assert [r.index for r in store.records()] == [0, 1, 2]
    for bad in (3, -1):
        with pytest.raises(MagicError, match=rf"No monitored cell with index {bad}: .* 0 to 2"):
            store.get(bad)


def test_records_must_be_added_in_index_order() -> None:
    store = PerfStore()
    with pytest.raises(MonitorError, match="expected 0"):
        store.add(record(1))


def test_the_oldest_records_are_dropped_beyond_max_records() -> None:
    store = PerfStore(max_records=2)
    for i in range(4):
        store.add(record(i))
    assert [r.index for r in store.records()] == [2, 3] and store.next_index == 4
    with pytest.raises(MagicError, match=r"Cell 1 is no longer kept: .* last 2 cells"):
        store.get(1)


def test_the_oldest_samples_are_dropped_first_beyond_the_value_budget() -> None:
    one_cell = sum(len(v) if isinstance(v, list) else 1 for col in columns(3).values() for v in col)
    store = PerfStore(max_sample_values=2 * one_cell)
    for i in range(3):
        store.add(record(i))
    kept = store.records()
    assert [r.samples_dropped for r in kept] == [True, False, False]
    assert kept[0].samples == {} and kept[0].duration == pytest.approx(1.5)
    assert kept[2].samples["time_s"] == [0.5, 1.0, 1.5]


def test_merging_weights_rates_by_time_and_keeps_peaks_and_totals() -> None:
    cols = columns(2, time_s=[1.0, 4.0], cpu_percent=[100.0, 0.0], memory_rss_bytes=[50, 20])
    later = {name: cols[name][1] for name in SAMPLE_COLUMNS}
    merged = merge_samples(cols, 0, later, before=0.0)
    assert merged["time_s"] == 4.0
    assert merged["cpu_percent"] == pytest.approx(25.0)  # 1 s at 100 %, 3 s at 0 %
    assert merged["cpu_percent_per_core"] == pytest.approx([0.75, 1.5])
    assert merged["memory_rss_bytes"] == 50
    assert merged["io_write_bytes"] == 200 and merged["io_write_count"] == 2


def test_downsampling_halves_the_samples_evenly() -> None:
    cols = columns(9)
    peak = max(cols["memory_rss_bytes"])
    downsample(cols)
    assert cols["time_s"] == [1.0, 2.0, 3.0, 4.0, 4.5]
    assert {len(v) for v in cols.values()} == {5}
    assert max(cols["memory_rss_bytes"]) == peak
    assert cols["cpu_percent"][:2] == pytest.approx([5.0, 25.0])
    assert cols["io_read_bytes"][-1] == 800

"""The per-cell table of ``jumper-proxy run``: rows from cells and perf records, text, JSON."""

from __future__ import annotations

import json
from typing import Any

from jumper_proxy.report import (
    CellRow,
    ExecutedCell,
    build_rows,
    cell_metadata,
    format_bytes,
    format_table,
    format_tags,
    has_gpu,
    rows_to_json,
    wall_time_from_metadata,
)

MIB = 1024 * 1024


def _record(code: str, index: int = 0, **samples: Any) -> dict[str, Any]:
    return {
        "index": index,
        "code": code,
        "start": 100.0,
        "end": 102.0,
        "duration": 2.0,
        "status": "ok",
        "samples": samples,
    }


def test_wall_time_from_nbclient_timestamps() -> None:
    execution = {
        "iopub.status.busy": "2026-01-02T10:00:00.250000Z",
        "iopub.execute_input": "2026-01-02T10:00:00.260000Z",
        "shell.execute_reply": "2026-01-02T10:00:01.750000Z",
    }

    assert wall_time_from_metadata(execution) == 1.5


def test_wall_time_unknown_without_both_timestamps() -> None:
    assert wall_time_from_metadata({}) is None
    assert wall_time_from_metadata({"iopub.status.busy": "2026-01-02T10:00:00Z"}) is None
    assert (
        wall_time_from_metadata({"iopub.status.busy": "later", "shell.execute_reply": "soon"})
        is None
    )


def test_rows_without_perf_data_keep_the_client_wall_time() -> None:
    cells = [ExecutedCell(index=2, source="\n  x = 1\ny = 2", status="ok", wall_s=0.5)]

    (row,) = build_rows(cells, None)

    assert row == CellRow(
        index=2,
        run_index=None,
        status="ok",
        wall_s=0.5,
        cpu_percent_mean=None,
        cpu_percent_max=None,
        memory_peak_bytes=None,
        io_read_bytes=None,
        io_write_bytes=None,
        gpu_util_percent_max=None,
        gpu_memory_peak_bytes=None,
        code="x = 1",
    )


def test_rows_summarise_the_matched_record() -> None:
    cells = [ExecutedCell(index=1, source="work()", status="ok", wall_s=2.1)]
    record = _record(
        "work()",
        time_s=[0.0, 0.5, 1.0, 1.5],
        cpu_percent=[0.0, 150.0, 140.0, 10.0],  # the first row is the baseline at time 0
        memory_rss_bytes=[100 * MIB, 300 * MIB, 250 * MIB, 100 * MIB],
        io_read_bytes=[1000, 1000, 5000, 5000],
        # a worker exits between the 3rd and 4th sample: its bytes leave the tree's sum
        io_write_bytes=[0, 4096, 8192, 6000],
    )

    (row,) = build_rows(cells, [record])

    assert row.wall_s == 2.0
    assert row.cpu_percent_mean == 100.0  # time-weighted: the baseline row weighs nothing
    assert row.cpu_percent_max == 150.0
    assert row.memory_peak_bytes == 300 * MIB
    assert row.io_read_bytes == 4000
    assert row.io_write_bytes == 8192
    assert row.gpu_util_percent_max is None
    assert not has_gpu([row])


def test_records_are_matched_by_code_in_order() -> None:
    cells = [
        ExecutedCell(index=0, source="%%jumper_help", status="ok", wall_s=0.01),
        ExecutedCell(index=1, source="a()", status="ok", wall_s=1.0),
        ExecutedCell(index=3, source="a()", status="error", wall_s=3.0),
    ]
    records = [
        _record("a()", 0, cpu_percent=[10.0, 20.0]),
        _record("hidden()", 1, cpu_percent=[99.0, 99.0]),
        _record("a()\n", 2, cpu_percent=[30.0, 40.0]),
    ]

    rows = build_rows(cells, records)

    assert [row.cpu_percent_max for row in rows] == [None, 20.0, 40.0]
    assert [row.run_index for row in rows] == [None, 0, 2]  # the magics' numbering
    assert [row.wall_s for row in rows] == [0.01, 2.0, 2.0]
    assert rows[2].status == "error"


def test_record_without_samples_gives_its_duration_only() -> None:
    cells = [ExecutedCell(index=0, source="pass", status="ok", wall_s=0.02)]
    record = _record("pass")
    del record["samples"]
    record["duration"] = 0.01

    (row,) = build_rows(cells, [record])

    assert row.wall_s == 0.01
    assert row.cpu_percent_mean is None
    assert row.io_read_bytes is None


def test_gpu_columns_summarise_devices() -> None:
    cells = [ExecutedCell(index=0, source="train()", status="ok", wall_s=1.0)]
    record = _record(
        "train()",
        gpu_util_percent=[[10.0, 80.0], [95.0, 20.0]],
        gpu_memory_bytes=[[1 * MIB, 2 * MIB], [4 * MIB, 1 * MIB]],
    )

    (row,) = build_rows(cells, [record])

    assert row.gpu_util_percent_max == 95.0
    assert row.gpu_memory_peak_bytes == 5 * MIB
    assert has_gpu([row])


def test_format_bytes() -> None:
    assert format_bytes(None) == "-"
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(200 * MIB) == "200.0 MiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
    assert format_bytes(5 * 1024**4) == "5.0 TiB"


def test_table_without_gpu_data() -> None:
    cells = [
        ExecutedCell(index=1, source="%%jumper_help", status="ok", wall_s=0.012),
        ExecutedCell(index=3, source="busy()", status="ok", wall_s=1.0),
    ]
    record = _record(
        "busy()",
        5,
        cpu_percent=[100.0, 99.0],
        memory_rss_bytes=[50 * MIB, 60 * MIB],
        io_read_bytes=[0, 0],
        io_write_bytes=[0, 2048],
    )

    table = format_table(build_rows(cells, [record]))

    assert table.splitlines() == [
        "cell  run  status  wall s  CPU% mean  CPU% max  peak mem  read  written  code",
        "   1    -  ok        0.01          -         -         -     -        -  %%jumper_help",
        "   3    5  ok        2.00       99.5     100.0  60.0 MiB   0 B  2.0 KiB  busy()",
    ]


def test_table_shows_gpu_columns_when_any_row_has_gpu_data() -> None:
    cells = [
        ExecutedCell(index=0, source="a = 1", status="ok", wall_s=0.1),
        ExecutedCell(index=1, source="train()", status="ok", wall_s=1.0),
    ]
    record = _record("train()", gpu_util_percent=[[50.0]], gpu_memory_bytes=[[MIB]])

    lines = format_table(build_rows(cells, [record])).splitlines()

    assert lines[0].split("  ")[-3:] == ["GPU% max", "GPU mem", "code"]
    assert lines[2].endswith("50.0  1.0 MiB  train()")


def test_long_code_is_shortened_in_the_table() -> None:
    cells = [ExecutedCell(index=0, source="x = " + "1" * 100, status="ok", wall_s=0.1)]

    (row,) = build_rows(cells, None)

    assert len(row.code) == 40
    assert row.code.endswith("...")


def test_rows_to_json_has_raw_numbers() -> None:
    cells = [ExecutedCell(index=4, source="f()", status="ok", wall_s=None)]
    record = _record("f()", cpu_percent=[1.0, 3.0], memory_rss_bytes=[10, 20])

    (data,) = json.loads(json.dumps(rows_to_json(build_rows(cells, [record]))))

    assert data == {
        "index": 4,
        "run_index": 0,
        "status": "ok",
        "wall_s": 2.0,
        "cpu_percent_mean": 2.0,
        "cpu_percent_max": 3.0,
        "memory_peak_bytes": 20,
        "io_read_bytes": None,
        "io_write_bytes": None,
        "gpu_util_percent_max": None,
        "gpu_memory_peak_bytes": None,
        "code": "f()",
    }


def test_tags_are_passed_on_as_the_proxy_gives_them() -> None:
    cells = [
        ExecutedCell(index=0, source="a()", status="ok", wall_s=1.0),
        ExecutedCell(index=1, source="b()", status="ok", wall_s=1.0),
    ]
    tagged = _record("a()", 0, cpu_percent=[100.0, 100.0])
    tagged["tags"] = ["cpu-bound"]

    rows = build_rows(cells, [tagged, _record("b()", 1)])

    assert [row.tags for row in rows] == [["cpu-bound"], None]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[-2:] == ["tags", "code"]
    assert lines[1].endswith("cpu-bound  a()") and lines[2].endswith("-          b()")
    assert "tags" in rows_to_json(rows)[0] and "tags" not in rows_to_json(rows)[1]
    assert "tags" not in format_table(build_rows(cells[1:], [_record("b()", 1)]))
    assert format_tags({"io": True}) == '{"io": true}' and format_tags([]) == "-"


def test_cell_metadata_is_the_row_without_position_and_code() -> None:
    cells = [ExecutedCell(index=7, source="f()", status="ok", wall_s=None)]
    record = _record("f()", 3, cpu_percent=[1.0, 3.0], memory_rss_bytes=[10, 20])
    record["tags"] = ["waiting"]

    (row,) = build_rows(cells, [record])

    assert cell_metadata(row) == {
        "run_index": 3,
        "status": "ok",
        "wall_s": 2.0,
        "cpu_percent_mean": 2.0,
        "cpu_percent_max": 3.0,
        "memory_peak_bytes": 20,
        "tags": ["waiting"],
    }
    (magic,) = build_rows([ExecutedCell(index=0, source="%%x", status="ok", wall_s=0.01234)], [])
    assert cell_metadata(magic) == {"status": "ok", "wall_s": 0.012}

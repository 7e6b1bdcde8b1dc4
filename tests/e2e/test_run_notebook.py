"""``jumper-proxy run``: notebooks executed headless through the proxy, with real kernels."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jumper_proxy.headless import request_perfdata

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.ipynb"
HEADER = [
    "cell",
    "status",
    "wall",
    "s",
    "CPU%",
    "mean",
    "CPU%",
    "max",
    "peak",
    "mem",
    "read",
    "written",
    "code",
]


def jumper_proxy(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "jumper_proxy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def progress_lines(stderr: str, total: int) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(rf"\[\d+/{total}\] cell \d+: ", line)]


def test_run_the_demo_through_the_proxy(tmp_path: Path) -> None:
    executed, perf = tmp_path / "demo.out.ipynb", tmp_path / "perf.json"

    result = jumper_proxy(
        "run", str(DEMO), "-o", str(executed), "--json", str(perf), "--upstream", "python3"
    )

    assert result.returncode == 0, result.stderr
    nb = nbformat.read(executed, as_version=4)
    code_cells = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    assert len(code_cells) == 8
    for _, cell in code_cells:
        assert cell.outputs, cell.source
        assert all(output.output_type != "error" for output in cell.outputs), cell.outputs
    assert "jumper_help" in str(code_cells[0][1].outputs)
    assert "held 200 MiB" in str(code_cells[2][1].outputs)
    history, last, everything = (code_cells[i][1].outputs[0]["data"] for i in (5, 6, 7))
    assert "import hashlib" in history["text/plain"]  # the monitored cells, listed
    assert "Bokeh" in last["text/html"] and "CPU" in last["text/plain"]
    assert "Cells 0 to 3" in everything["text/plain"]  # the four ordinary cells, back to back

    progress = progress_lines(result.stderr, 8)
    assert [line.split(":")[0] for line in progress] == [
        f"[{n}/8] cell {i}" for n, (i, _) in enumerate(code_cells, start=1)
    ]
    assert all(": ok in " in line for line in progress)

    table = result.stdout.splitlines()
    assert table[0].split() == HEADER
    assert [int(line.split()[0]) for line in table[1:]] == [i for i, _ in code_cells]

    rows: list[dict[str, Any]] = json.loads(perf.read_text())
    assert [row["index"] for row in rows] == [i for i, _ in code_cells]
    assert all(row["status"] == "ok" for row in rows)
    cpu_loop, memory, pool = rows[1], rows[2], rows[4]
    assert 0.9 <= cpu_loop["wall_s"] < 5
    assert cpu_loop["cpu_percent_mean"] > 50  # the monitor measured the kernel's busy loop
    assert memory["memory_peak_bytes"] > 200 * 1024 * 1024
    assert pool["cpu_percent_max"] >= 120  # two worker processes, counted with the kernel


def test_a_failing_cell_stops_the_run_and_the_notebook_is_saved(tmp_path: Path) -> None:
    notebook = tmp_path / "fails.ipynb"
    nbformat.write(
        new_notebook(
            cells=[
                new_markdown_cell("# fails"),
                new_code_cell("print('before')"),
                new_code_cell("1 / 0"),
                new_code_cell("print('after')"),
            ]
        ),
        notebook,
    )

    result = jumper_proxy("run", str(notebook), "--upstream", "python3")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Cell 2 raised ZeroDivisionError: division by zero"
    )
    assert len(progress_lines(result.stderr, 3)) == 2
    executed = nbformat.read(tmp_path / "fails.out.ipynb", as_version=4)
    assert executed.cells[1].outputs[0].text == "before\n"
    assert executed.cells[2].outputs[0].output_type == "error"
    assert executed.cells[3].outputs == []
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [
        ["1", "ok"],
        ["2", "error"],
    ]

    allowed = jumper_proxy("run", str(notebook), "--upstream", "python3", "--allow-errors")

    assert allowed.returncode == 0, allowed.stderr
    assert len(progress_lines(allowed.stderr, 3)) == 3


def test_perfdata_request_that_gets_no_answer_gives_none() -> None:
    """A plain ipykernel ignores ``jumper_perfdata_request``: the wait ends at the timeout."""

    async def ask() -> tuple[list[dict[str, Any]] | None, float]:
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            started = time.monotonic()
            records = await request_perfdata(kc, timeout=1.0)
            return records, time.monotonic() - started
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    records, waited = asyncio.run(ask())

    assert records is None
    assert 0.9 <= waited < 5

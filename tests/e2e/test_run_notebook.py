"""``jumper-proxy run``: notebooks executed headless through the proxy, with real kernels."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
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
    "run",
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


def write_notebook(path: Path, *cells: Any) -> Path:
    """A notebook of ``cells`` (a string is a code cell) at ``path``."""
    nb = new_notebook(cells=[new_code_cell(c) if isinstance(c, str) else c for c in cells])
    nbformat.write(nb, path)
    return path


def progress_lines(stderr: str, total: int) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(rf"\[\d+/{total}\] cell \d+: ", line)]


def test_run_the_demo_through_the_proxy(tmp_path: Path) -> None:
    executed, perf, report = (tmp_path / name for name in ("demo.out.ipynb", "perf.json", "r.html"))

    result = jumper_proxy(
        "run",
        str(DEMO),
        "-o",
        str(executed),
        "--json",
        str(perf),
        "--html",
        str(report),
        "--upstream",
        "python3",
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
    # BokehJS comes once, with the first graph; the second graph uses it
    assert last["text/html"].count("BEGIN bokeh.min.js") == 1
    assert "bokeh.min.js" not in everything["text/html"]
    assert len(json.dumps(code_cells[7][1].outputs[0]).encode()) < 300_000

    progress = progress_lines(result.stderr, 8)
    assert [line.split(":")[0] for line in progress] == [
        f"[{n}/8] cell {i}" for n, (i, _) in enumerate(code_cells, start=1)
    ]
    assert all(": ok in " in line for line in progress)

    table = result.stdout.splitlines()
    assert table[0].split() == HEADER
    assert [int(line.split()[0]) for line in table[1:]] == [i for i, _ in code_cells]
    # the run index the magics use: the four ordinary cells are 0 to 3, magics have none
    assert [line.split()[1] for line in table[1:]] == ["-", "0", "1", "2", "3", "-", "-", "-"]

    rows: list[dict[str, Any]] = json.loads(perf.read_text())
    assert [row["index"] for row in rows] == [i for i, _ in code_cells]
    assert [row["run_index"] for row in rows] == [None, 0, 1, 2, 3, None, None, None]
    assert all(row["status"] == "ok" for row in rows)
    cpu_loop, memory, pool = rows[1], rows[2], rows[4]
    assert 0.9 <= cpu_loop["wall_s"] < 5
    assert cpu_loop["cpu_percent_mean"] > 50  # the monitor measured the kernel's busy loop
    assert memory["memory_peak_bytes"] > 200 * 1024 * 1024
    assert pool["cpu_percent_max"] >= 120  # two worker processes, counted with the kernel

    # the figures travel with the notebook
    assert nb.metadata["jumper"]["upstream"]["kernel_name"] == "python3"
    for (_, cell), row in zip(code_cells, rows, strict=True):
        summary = cell.metadata["jumper"]
        assert summary.get("run_index") == row["run_index"]
        assert summary["status"] == "ok"
        assert summary["wall_s"] == round(row["wall_s"], 3)
    assert code_cells[2][1].metadata["jumper"]["memory_peak_bytes"] == memory["memory_peak_bytes"]
    assert "jumper" not in nb.cells[0].metadata  # markdown cells get none

    page = report.read_text()
    assert page.count("BEGIN bokeh.min.js") == 1
    sampled = sum(row["cpu_percent_mean"] is not None for row in rows)
    assert page.count("embed_item(") == 1 + sampled  # the timeline and each sampled cell
    assert "All monitored cells, back to back" in page
    assert all(f'id="cell-{i}"' in page for i in (3, 5, 7, 9))
    assert not re.search(r"<script[^>]*\bsrc=", page)


def test_a_failing_cell_stops_the_run_and_the_notebook_is_saved(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "fails.ipynb",
        new_markdown_cell("# fails"),
        "print('before')",
        "1 / 0",
        "print('after')",
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
    assert [line.split()[:3] for line in result.stdout.splitlines()[1:]] == [
        ["1", "0", "ok"],
        ["2", "1", "error"],
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


def check_history_in_memory(path: Path) -> Path:
    """nbclient's own "Check History in Memory" case: IPython must keep its history in memory
    (nbclient arranges that only for kernels named ``python3``)."""
    return write_notebook(
        path,
        "from IPython import get_ipython",
        'assert get_ipython().history_manager.hist_file == ":memory:"',
    )


def test_a_run_keeps_ipython_history_in_memory(tmp_path: Path) -> None:
    notebook = check_history_in_memory(tmp_path / "Check History in Memory.ipynb")

    result = jumper_proxy("run", str(notebook), "--upstream", "python3")

    assert result.returncode == 0, result.stderr
    assert len(progress_lines(result.stderr, 2)) == 2


def test_a_kernelspec_forwarding_the_history_argument_serves_nbclient(
    tmp_path: Path, proxy_kernelspec: str
) -> None:
    """What papermill users install: nbclient (papermill's executor) gives the history argument
    to ``python3`` kernels only, so the proxy's kernelspec forwards it itself."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    installed = jumper_proxy(
        "install",
        "--prefix",
        str(tmp_path / "prefix"),
        "--name",
        "jp-headless",
        "--upstream-arg=--HistoryManager.hist_file=:memory:",
    )
    assert installed.returncode == 0, installed.stderr
    notebook = check_history_in_memory(tmp_path / "history.ipynb")
    jupyter_path = os.pathsep.join(
        [str(tmp_path / "prefix" / "share" / "jupyter"), os.environ["JUPYTER_PATH"]]
    )

    def execute(kernel_name: str) -> None:
        nb = nbformat.read(notebook, as_version=4)
        NotebookClient(nb, kernel_name=kernel_name, timeout=60).execute()

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", jupyter_path)
        execute("jp-headless")
        with pytest.raises(CellExecutionError, match="AssertionError"):
            execute(proxy_kernelspec)  # without it, IPython's history is a file


def test_a_cell_past_the_timeout_is_interrupted_and_keeps_its_figures(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        "print('quick')",
        "print('spinning')\nwhile True:\n    pass",
        "print('never')",
    )
    perf = tmp_path / "perf.json"

    result = jumper_proxy(
        "run", str(notebook), "--timeout", "3", "--json", str(perf), "--upstream", "python3"
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "Error: Cell 1 did not finish within 3 s."
    assert "Traceback" not in result.stderr and "traitlets" not in result.stderr
    rows = json.loads(perf.read_text())
    assert [(row["index"], row["status"]) for row in rows] == [(0, "ok"), (1, "timeout")]
    spun = rows[1]
    assert spun["run_index"] == 1
    assert spun["wall_s"] >= 3
    # its figures, up to the interrupt (how much CPU a spinning loop gets depends on the load)
    assert spun["cpu_percent_mean"] > 0 and spun["memory_peak_bytes"] > 0
    executed = nbformat.read(tmp_path / "slow.out.ipynb", as_version=4)
    spinning, interrupted, note = executed.cells[1].outputs
    assert spinning.text == "spinning\n" and interrupted.ename == "KeyboardInterrupt"
    assert note.text == "jumper-proxy run: interrupted: the cell ran longer than --timeout 3 s\n"
    assert executed.cells[1].metadata["jumper"]["status"] == "timeout"
    assert executed.cells[1].metadata["jumper"]["cpu_percent_mean"] > 0
    assert executed.cells[2].outputs == []


def test_a_long_cell_shows_a_live_line_on_a_terminal(tmp_path: Path) -> None:
    """Run with stderr on a terminal: while the cell runs, one status line is rewritten in
    place; it is cleared before the cell's progress line. The cell ends when the test has seen
    a status line with figures."""
    flag = tmp_path / "go"
    notebook = write_notebook(
        tmp_path / "wait.ipynb",
        f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.05)",
    )
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "jumper_proxy", "run", str(notebook), "--upstream", "python3"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 90
        while b"% \xc2\xb7 RSS " not in seen.rpartition(b"\r\x1b[K")[2]:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                seen += os.read(leader, 65536)
        flag.touch()
        out, _ = process.communicate(timeout=60)
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all is read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)

    assert process.returncode == 0, seen
    text = seen.decode()
    status = text.split("\r\x1b[K")[1]
    assert status.startswith("  Cell 0 running: ") and " s \u00b7 CPU " in status
    assert "\r\x1b[K[1/1] cell 0: ok in " in text.replace("\r\n", "\n")  # cleared first
    assert out.splitlines()[1].split()[:3] == ["0", "0", "ok"]

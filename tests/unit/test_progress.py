"""What ``jumper-proxy run`` shows while a cell runs: the status line on a terminal, a line now
and then elsewhere, and the line per cell. The kernel here is this test's own process."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest
from nbformat.v4 import new_code_cell

from jumper_proxy import progress
from jumper_proxy.progress import TIMEOUT_ENAME, Progress


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LIVE_AFTER_S", 0.0)
    monkeypatch.setattr(progress, "LIVE_EVERY_S", 0.02)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.1)
    monkeypatch.setattr(progress, "SAMPLE_HZ", 20.0)


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        await asyncio.sleep(0.01)


def test_on_a_terminal_the_status_line_shows_the_kernels_figures_then_is_cleared() -> None:
    lines: list[str] = []
    statuses: list[str] = []
    tracker = Progress(1, lines.append, statuses.append, lambda: [os.getpid()])
    cell = new_code_cell("work()")

    async def cell_runs() -> None:
        tracker.on_cell_execute(cell, 4)
        await until(lambda: any(" \u00b7 CPU " in s for s in statuses))
        tracker.on_cell_executed(cell, 4, {"content": {"status": "ok"}})

    asyncio.run(cell_runs())

    assert statuses[0].startswith("  Cell 4 running: ")
    assert " \u00b7 RSS " in statuses[-2] and statuses[-1] == ""  # cleared before the next line
    assert len(lines) == 1 and lines[0].startswith("[1/1] cell 4: ok in ")


def test_elsewhere_a_running_cell_prints_a_line_now_and_then() -> None:
    lines: list[str] = []
    tracker = Progress(2, lines.append, None, lambda: [os.getpid()])
    cell = new_code_cell("work()")

    async def cell_runs() -> None:
        tracker.on_cell_execute(cell, 0)
        await until(lambda: len(lines) >= 2)
        tracker.on_cell_executed(cell, 0, {"content": {"status": "ok"}})
        await asyncio.sleep(0.2)  # nothing more comes once the cell is done

    asyncio.run(cell_runs())

    assert all(line.startswith("  Cell 0 running: ") for line in lines[:-1])
    assert lines[-1].startswith("[1/2] cell 0: ok in ") and len(lines) <= 4


def test_a_cell_interrupted_at_its_timeout_is_marked_so() -> None:
    lines: list[str] = []
    tracker = Progress(1, lines.append)
    cell = new_code_cell("spin()")
    reply = {"content": {"status": "error", "ename": TIMEOUT_ENAME, "evalue": "3 s"}}

    async def cell_runs() -> None:
        tracker.on_cell_execute(cell, 0)
        tracker.on_cell_executed(cell, 0, reply)

    asyncio.run(cell_runs())

    assert tracker.cells[0].status == "timeout"
    assert cell.outputs[-1].text == (
        "jumper-proxy run: interrupted: the cell ran longer than --timeout 3 s\n"
    )
    assert lines[0].startswith("[1/1] cell 0: timeout in ")

"""The monitor as the scheduler drives it: where a cell's baseline is read, and its records."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from jumper_proxy.api import CellRun
from jumper_proxy.cells import parse_cell
from jumper_proxy.monitor import sampler as sampler_module
from jumper_proxy.monitor.service import INLINE_BASELINE_MAX_PROCS, Monitor, MonitorSettings
from jumper_proxy.wire import Message


def request(code: str, n: int) -> CellRun:
    content = {"code": code, "silent": False}
    msg = Message(
        idents=[b"client"],
        frames=[b"", b"{}", b"{}", b"{}", json.dumps(content).encode()],
        header={"msg_id": f"cell-{n}", "msg_type": "execute_request"},
        parent_header={},
    )
    return CellRun(msg=msg, cell=parse_cell(code), content=content, reply_status="ok")


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """A root that starts more children than a baseline is read inline for, on request."""
    code = (
        "import subprocess, sys\n"
        "input()\n"
        f"kids = [subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],\n"
        f"                         stdin=subprocess.PIPE) for _ in range({INLINE_BASELINE_MAX_PROCS + 4})]\n"
        "print('ready', flush=True)\n"
        "input()\n"
    )
    root = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    yield root
    root.kill()
    root.wait()
    for pipe in (root.stdin, root.stdout):
        if pipe is not None:
            pipe.close()


def test_the_baseline_of_a_large_tree_is_read_off_the_event_loop(
    tree: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    where: list[str] = []
    begin = sampler_module.Sampler._begin

    def spy(self: sampler_module.Sampler) -> None:
        where.append(threading.current_thread().name)
        begin(self)

    monkeypatch.setattr(sampler_module.Sampler, "_begin", spy)
    published: list[Any] = []
    monitor = Monitor(
        lambda: tree.pid,
        lambda *message: published.append(message),
        settings=MonitorSettings(frequency_hz=2, reports_min=1),
    )

    async def cells() -> list[int]:
        for n in range(3):
            cell = request(f"cell {n}", n)
            monitor.cell_started(cell)
            if n == 1:  # the tree grows during the second cell
                assert tree.stdin is not None and tree.stdout is not None
                tree.stdin.write(b"go\n")
                tree.stdin.flush()
                assert tree.stdout.readline() == b"ready\n"
            await asyncio.sleep(0.05)
            monitor.cell_finished(cell)
            await asyncio.sleep(0)  # the sampler finishes once the idle would be out
        await monitor.drain()
        return [record.samples["num_procs"][0] for record in monitor.store.records()]

    try:
        starts = asyncio.run(cells())
    finally:
        monitor.close()
    loop_thread = threading.current_thread().name
    # small tree: read in the loop; the second cell's finish saw the large tree
    assert where == [loop_thread, loop_thread, "jumper-sampler"]
    assert starts == [1, 1, INLINE_BASELINE_MAX_PROCS + 5]
    assert published == []

"""What ``jumper-proxy run`` shows while it runs: a line per executed cell and, while a cell
runs, that it is alive.

On a terminal a status line is rewritten in place every second once a cell has run for a
second: elapsed time and the kernel's current CPU, memory, I/O, processes and threads.
Elsewhere (a log file, CI) the same line is printed every 30 s. The figures come from a
:class:`~jumper_proxy.monitor.sampler.Sampler` in the ``run`` process over the kernel's
process tree, sampled once a second; they need nothing from the proxy. The cells as the
client saw them (status, wall time) are collected for the table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbformat.v4 import new_output

from jumper_proxy.monitor.sampler import Sampler
from jumper_proxy.plots import live_bundle
from jumper_proxy.report import ExecutedCell, wall_time_from_metadata

#: a cell shows its status line once it has run this long, then every LIVE_EVERY_S
LIVE_AFTER_S = 1.0
LIVE_EVERY_S = 1.0
#: off a terminal, a status line this often
LOG_EVERY_S = 30.0
#: the kernel's tree is sampled this often for the status line
SAMPLE_HZ = 1.0
#: the ``ename`` of the reply nbclient makes up for a cell it interrupted at its timeout
TIMEOUT_ENAME = "CellTimeout"


@dataclass
class Progress:
    """nbclient's cell hooks for one run.

    ``emit`` prints a line; ``status`` rewrites the terminal's status line (an empty text
    clears it) and is ``None`` off a terminal; ``kernel_roots`` gives the pids whose process
    trees are the kernel (empty when unknown: the status line then shows the time only).
    """

    total: int
    emit: Callable[[str], None]
    status: Callable[[str], None] | None = None
    kernel_roots: Callable[[], list[int]] = list
    cells: list[ExecutedCell] = field(default_factory=list)
    current: int | None = None
    _source: str = ""
    _started: float = 0.0
    _sampler: Sampler | None = None
    _ticker: asyncio.Task[None] | None = None
    _shown: bool = False

    def on_cell_execute(self, cell: Any, cell_index: int) -> None:
        self.current = cell_index
        self._source = cell.source
        self._started = time.monotonic()
        self._sampler = Sampler(self.kernel_roots, SAMPLE_HZ)
        self._sampler.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(cell_index))

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        content = execute_reply.get("content", {}) if execute_reply else {}
        wall = wall_time_from_metadata(cell.metadata.get("execution", {}))
        status = content.get("status", "unknown")
        if status == "error" and content.get("ename") == TIMEOUT_ENAME:
            status = "timeout"
            cell.outputs.append(
                new_output(  # type: ignore[no-untyped-call]
                    "stream",
                    name="stderr",
                    text="jumper-proxy run: interrupted: the cell ran longer than "
                    f"--timeout {content.get('evalue', '')}\n",
                )
            )
        self._record(cell_index, status, wall)

    def stopped(self, status: str) -> None:
        """The current cell ended without an execute reply (the kernel died)."""
        if self.current is not None and all(c.index != self.current for c in self.cells):
            self._record(self.current, status, None)

    def close(self) -> None:
        """Stop what a cell left running (the run ended in the middle of it)."""
        self._stop_live()

    def live_line(self, cell_index: int, elapsed_s: float) -> str:
        """The status line of the running cell."""
        snapshot = self._sampler.snapshot() if self._sampler is not None else None
        return "  " + str(live_bundle(cell_index, elapsed_s, snapshot)["text/plain"])

    async def _tick(self, cell_index: int) -> None:
        next_log = LOG_EVERY_S
        await asyncio.sleep(LIVE_AFTER_S)
        while True:
            elapsed = time.monotonic() - self._started
            if self.status is not None:
                self.status(self.live_line(cell_index, elapsed))
                self._shown = True
            elif elapsed >= next_log:
                self.emit(self.live_line(cell_index, elapsed))
                next_log += LOG_EVERY_S
            await asyncio.sleep(LIVE_EVERY_S)

    def _stop_live(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._sampler is not None:
            self._sampler.finish()
            self._sampler = None
        if self._shown and self.status is not None:
            self.status("")
        self._shown = False

    def _record(self, index: int, status: str, wall: float | None) -> None:
        self._stop_live()
        if wall is None:
            wall = time.monotonic() - self._started
        self.cells.append(
            ExecutedCell(index=index, source=self._source, status=status, wall_s=wall)
        )
        first = next((line.strip() for line in self._source.splitlines() if line.strip()), "")
        self.emit(
            f"[{len(self.cells)}/{self.total}] cell {index}: {status} in {wall:.2f} s  {first}"
        )

"""Headless execution of a notebook through the proxy (``jumper-proxy run``).

The proxy is started from a kernelspec written to a temporary directory that only this run's
kernel manager searches, so nothing needs to be installed and nothing is left behind. nbclient
executes the cells (one progress line per cell from its hooks); afterwards the proxy is asked
for its perf records with a ``jumper_perfdata_request`` on the shell channel, and the executed
notebook is saved whether or not every cell succeeded.
"""

from __future__ import annotations

import asyncio
import queue
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import ConfigurationError, UpstreamError
from jumper_proxy.kernelspec import kernel_json, write_kernelspec
from jumper_proxy.report import ExecutedCell, wall_time_from_metadata

#: name of the temporary kernelspec the run's kernel manager starts
RUN_KERNEL_NAME = "jumper-proxy-run"
#: how long to wait for the proxy's ``jumper_perfdata_reply`` once all cells have run
PERFDATA_TIMEOUT = 5.0
PERFDATA_REQUEST = "jumper_perfdata_request"
PERFDATA_REPLY = "jumper_perfdata_reply"


@dataclass
class RunResult:
    """What a run produced besides the saved notebook."""

    cells: list[ExecutedCell]
    #: the proxy's perf records, ``None`` if it did not answer the perf data request
    records: list[dict[str, Any]] | None
    #: why the run stopped early (a failing cell, a timeout, a dead kernel), else ``None``
    error: str | None


def default_output(notebook: Path) -> Path:
    """Where the executed notebook goes without ``-o``: ``NAME.out.ipynb`` beside the input."""
    return notebook.with_name(notebook.stem + ".out.ipynb")


def read_notebook(path: Path) -> Any:
    """Read a notebook file as nbformat v4, or raise ConfigurationError saying why not."""
    if not path.is_file():
        raise ConfigurationError(f"Notebook {path} does not exist.")
    try:
        return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ConfigurationError(f"Cannot read notebook {path}: {exc.strerror}.") from None
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not a notebook: {exc}") from None


def run_notebook(
    notebook: Path,
    output: Path,
    *,
    upstream: UpstreamSpec,
    timeout: int | None = None,
    allow_errors: bool = False,
    debug: bool = False,
    progress: Callable[[str], None] = print,
) -> RunResult:
    """Execute ``notebook`` through the proxy wrapping ``upstream`` and save it to ``output``.

    The kernel runs in the notebook's directory. ``timeout`` limits each cell (seconds);
    with ``allow_errors`` a failing cell does not stop the run.
    """
    nb = read_notebook(notebook)
    if not output.parent.is_dir():
        raise ConfigurationError(f"Cannot save to {output}: {output.parent} is not a directory.")
    tracker = _Progress(_count_runnable(nb), progress)
    with tempfile.TemporaryDirectory(prefix="jumper-proxy-run-") as kernels:
        spec_dir = Path(kernels) / RUN_KERNEL_NAME
        spec_dir.mkdir()
        write_kernelspec(spec_dir, kernel_json(upstream, debug=debug))
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        manager = AsyncKernelManager(kernel_name=RUN_KERNEL_NAME, kernel_spec_manager=specs)
        client = NotebookClient(
            nb,
            km=manager,
            timeout=timeout,
            allow_errors=allow_errors,
            record_timing=True,
            resources={"metadata": {"path": str(notebook.resolve().parent)}},
            on_cell_execute=tracker.on_cell_execute,
            on_cell_executed=tracker.on_cell_executed,
        )
        records, error = asyncio.run(_execute(client, manager, tracker, timeout))
    _save(nb, output)
    return RunResult(cells=tracker.cells, records=records, error=error)


def _count_runnable(nb: Any) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        and cell.source.strip()
        and "skip-execution" not in cell.metadata.get("tags", [])
    )


def _save(nb: Any, output: Path) -> None:
    try:
        nbformat.write(nb, output)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ConfigurationError(f"Cannot save the notebook to {output}: {exc.strerror}.") from None


async def _execute(
    client: Any, manager: Any, tracker: _Progress, timeout: int | None
) -> tuple[list[dict[str, Any]] | None, str | None]:
    error: str | None = None
    records: list[dict[str, Any]] | None = None
    kernel_gone = False
    try:
        try:
            await client.async_execute()
        except CellExecutionError as exc:
            error = f"Cell {tracker.current} raised {exc.ename}: {exc.evalue}"
        except CellTimeoutError:
            tracker.stopped("timeout")
            error = f"Cell {tracker.current} did not finish within {timeout} s."
            kernel_gone = True
        except DeadKernelError:
            tracker.stopped("dead")
            error = f"The kernel died while running cell {tracker.current}."
            kernel_gone = True
        except (RuntimeError, TimeoutError) as exc:
            if tracker.current is None:
                raise UpstreamError(f"The jumper-proxy kernel did not start: {exc}") from None
            raise UpstreamError(f"Running cell {tracker.current} failed: {exc}") from None
        if not kernel_gone and client.kc is not None:
            records = await request_perfdata(client.kc, PERFDATA_TIMEOUT)
    finally:
        await _shutdown(client, manager, now=kernel_gone)
    return records, error


async def _shutdown(client: Any, manager: Any, *, now: bool) -> None:
    # The manager is ours, not nbclient's, so nbclient leaves the kernel running for the perf
    # data request; stop it here, then the client's channels.
    if manager.has_kernel:
        await manager.shutdown_kernel(now=now)
    if client.kc is not None:
        client.kc.stop_channels()
        client.kc = None


async def request_perfdata(kc: Any, timeout: float) -> list[dict[str, Any]] | None:
    """Ask the proxy for its perf records on the shell channel of the async client ``kc``.

    Returns the records of a ``jumper_perfdata_reply`` with status ``ok``; ``None`` when the
    kernel answers anything else or nothing within ``timeout`` seconds.
    """
    request = kc.session.msg(PERFDATA_REQUEST, {})
    kc.shell_channel.send(request)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            reply = await kc.shell_channel.get_msg(timeout=remaining)
        except queue.Empty:
            return None
        if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
            continue
        content = reply.get("content", {})
        if reply.get("msg_type") != PERFDATA_REPLY or content.get("status") != "ok":
            return None
        records = content.get("records")
        if not isinstance(records, list):
            return None
        return [record for record in records if isinstance(record, dict)]
    return None


@dataclass
class _Progress:
    """nbclient hooks: one progress line per executed cell, and the cells as the client saw
    them (status, wall time)."""

    total: int
    emit: Callable[[str], None]
    cells: list[ExecutedCell] = field(default_factory=list)
    current: int | None = None
    _source: str = ""
    _started: float = 0.0

    def on_cell_execute(self, cell: Any, cell_index: int) -> None:
        self.current = cell_index
        self._source = cell.source
        self._started = time.monotonic()

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        content = execute_reply.get("content", {}) if execute_reply else {}
        wall = wall_time_from_metadata(cell.metadata.get("execution", {}))
        self._record(cell_index, content.get("status", "unknown"), wall)

    def stopped(self, status: str) -> None:
        """The current cell ended without an execute reply (timeout, dead kernel)."""
        if self.current is not None and all(c.index != self.current for c in self.cells):
            self._record(self.current, status, None)

    def _record(self, index: int, status: str, wall: float | None) -> None:
        if wall is None:
            wall = time.monotonic() - self._started
        self.cells.append(
            ExecutedCell(index=index, source=self._source, status=status, wall_s=wall)
        )
        first = next((line.strip() for line in self._source.splitlines() if line.strip()), "")
        self.emit(
            f"[{len(self.cells)}/{self.total}] cell {index}: {status} in {wall:.2f} s  {first}"
        )

"""Headless execution of a notebook through the proxy (``jumper-proxy run``).

The proxy is started from a kernelspec written to a temporary directory that only this run's
kernel manager searches, so nothing needs to be installed and nothing is left behind. An
IPython upstream keeps its history in memory (``--HistoryManager.hist_file=:memory:``, as
nbclient does for ``python3`` kernels), so parallel runs share no history file. nbclient
executes the cells (progress from its hooks, :mod:`jumper_proxy.progress`). A cell that runs
past ``--timeout`` is interrupted (by nbclient, which then waits for its last outputs), so the
proxy records it with its figures up to the timeout, and the run fails there unless
``--allow-errors``. Afterwards the proxy is asked for its perf records with a
``jumper_perfdata_request`` on the shell channel; each executed cell gets its perf summary in
``metadata.jumper`` and the notebook ``metadata.jumper`` says what ran it; the executed
notebook is saved whether or not every cell succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat
import psutil
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import ConfigurationError, UpstreamError
from jumper_proxy.kernelspec import is_ipython_upstream, kernel_json, write_kernelspec
from jumper_proxy.launch import METADATA_KEY
from jumper_proxy.progress import TIMEOUT_ENAME, Progress
from jumper_proxy.report import CellRow, ExecutedCell, build_rows, cell_metadata

#: name of the temporary kernelspec the run's kernel manager starts
RUN_KERNEL_NAME = "jumper-proxy-run"
#: how long to wait for the proxy's ``jumper_perfdata_reply`` once all cells have run
PERFDATA_TIMEOUT = 5.0
PERFDATA_REQUEST = "jumper_perfdata_request"
PERFDATA_REPLY = "jumper_perfdata_reply"
IN_MEMORY_HISTORY = "--HistoryManager.hist_file=:memory:"
#: the key of the perf summaries in cell and notebook metadata
NOTEBOOK_KEY = "jumper"


@dataclass
class RunResult:
    """What a run produced besides the saved notebook."""

    cells: list[ExecutedCell]
    #: the proxy's perf records, ``None`` if it did not answer the perf data request
    records: list[dict[str, Any]] | None
    #: why the run stopped early (a failing cell, a timeout, a dead kernel), else ``None``
    error: str | None
    #: one per executed cell, as in the table and in the cells' ``metadata.jumper``
    rows: list[CellRow] = field(default_factory=list)


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


def headless_upstream(upstream: UpstreamSpec) -> UpstreamSpec:
    """``upstream`` with in-memory IPython history, unless it is not IPython or its
    arguments choose a history file already."""
    if any(arg.startswith("--HistoryManager.hist_file") for arg in upstream.args):
        return upstream
    if not is_ipython_upstream(upstream):
        return upstream
    return replace(upstream, args=(*upstream.args, IN_MEMORY_HISTORY))


def run_notebook(
    notebook: Path,
    output: Path,
    *,
    upstream: UpstreamSpec,
    timeout: int | None = None,
    allow_errors: bool = False,
    debug: bool = False,
    progress: Callable[[str], None] = print,
    status: Callable[[str], None] | None = None,
) -> RunResult:
    """Execute ``notebook`` through the proxy wrapping ``upstream`` and save it to ``output``.

    The kernel runs in the notebook's directory. ``timeout`` limits each cell (seconds);
    with ``allow_errors`` a failing cell does not stop the run. ``progress`` gets a line per
    cell, ``status`` (on a terminal) the running cell's status line.
    """
    nb = read_notebook(notebook)
    if not output.parent.is_dir():
        raise ConfigurationError(f"Cannot save to {output}: {output.parent} is not a directory.")
    content = kernel_json(headless_upstream(upstream), debug=debug)
    with tempfile.TemporaryDirectory(prefix="jumper-proxy-run-") as kernels:
        spec_dir = Path(kernels) / RUN_KERNEL_NAME
        spec_dir.mkdir()
        write_kernelspec(spec_dir, content)
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        manager = AsyncKernelManager(kernel_name=RUN_KERNEL_NAME, kernel_spec_manager=specs)
        tracker = Progress(_count_runnable(nb), progress, status, lambda: _kernel_roots(manager))
        client = NotebookClient(
            nb,
            km=manager,
            timeout=timeout,
            # a cell past its timeout is interrupted, so that the proxy records it, and fails
            interrupt_on_timeout=True,
            error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": f"{timeout} s", "traceback": []},
            allow_errors=allow_errors,
            record_timing=True,
            log=_nbclient_log(debug),
            resources={"metadata": {"path": str(notebook.resolve().parent)}},
            on_cell_execute=tracker.on_cell_execute,
            on_cell_executed=tracker.on_cell_executed,
        )
        try:
            records, error = asyncio.run(_execute(client, manager, tracker, timeout))
        finally:
            tracker.close()
    rows = build_rows(tracker.cells, records)
    annotate(nb, rows, content["metadata"][METADATA_KEY])
    _save(nb, output)
    return RunResult(cells=tracker.cells, records=records, error=error, rows=rows)


def annotate(nb: Any, rows: list[CellRow], run: dict[str, Any]) -> None:
    """Each executed cell's perf summary into its ``metadata.jumper``, and what ran the
    notebook into the notebook's (a summary left by an earlier run is removed)."""
    for cell in nb.cells:
        cell.metadata.pop(NOTEBOOK_KEY, None)
    for row in rows:
        nb.cells[row.index].metadata[NOTEBOOK_KEY] = cell_metadata(row)
    nb.metadata[NOTEBOOK_KEY] = dict(run)


def _nbclient_log(debug: bool) -> logging.Logger:
    """nbclient's logger: quiet unless debugging (the run reports timeouts and errors itself)."""
    log = logging.getLogger("jumper_proxy.nbclient")
    log.setLevel(logging.DEBUG if debug else logging.CRITICAL)
    return log


def _kernel_roots(manager: Any) -> list[int]:
    """The kernel's processes: the proxy's children (the proxy itself is not the kernel)."""
    process = getattr(manager.provisioner, "process", None) if manager.has_kernel else None
    if process is None:
        return []
    try:
        return [child.pid for child in psutil.Process(process.pid).children()]
    except psutil.Error:
        return []


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
    client: Any, manager: Any, tracker: Progress, timeout: int | None
) -> tuple[list[dict[str, Any]] | None, str | None]:
    error: str | None = None
    records: list[dict[str, Any]] | None = None
    kernel_gone = False
    try:
        try:
            await client.async_execute()
        except CellExecutionError as exc:
            if exc.ename == TIMEOUT_ENAME:
                error = f"Cell {tracker.current} did not finish within {timeout} s."
            else:
                error = f"Cell {tracker.current} raised {exc.ename}: {exc.evalue}"
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

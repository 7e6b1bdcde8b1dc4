"""What ``jumper-proxy run`` decides before and after running: the upstream's arguments, and
the perf summaries it writes into the notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.headless import IN_MEMORY_HISTORY, annotate, headless_upstream
from jumper_proxy.report import ExecutedCell, build_rows


@pytest.fixture
def bash_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec of a kernel that is not IPython, on the Jupyter path."""
    kernels = tmp_path / "share" / "jupyter" / "kernels" / "not-ipython"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps({"argv": ["bash-kernel", "-f", "{connection_file}"], "language": "bash"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    return "not-ipython"


def test_an_ipython_upstream_gets_its_history_in_memory(bash_like: str) -> None:
    python3 = UpstreamSpec(kernel_name="python3", args=("--log-level=DEBUG",))
    chosen = UpstreamSpec(kernel_name="python3", args=("--HistoryManager.hist_file=/tmp/h",))

    assert headless_upstream(python3).args == ("--log-level=DEBUG", IN_MEMORY_HISTORY)
    assert headless_upstream(UpstreamSpec(python="/env/bin/python")).args == (IN_MEMORY_HISTORY,)
    assert headless_upstream(chosen) == chosen  # the user's own choice stays
    assert headless_upstream(UpstreamSpec(kernel_name=bash_like)).args == ()  # not IPython


def test_annotate_writes_each_executed_cells_summary_and_drops_old_ones() -> None:
    nb = new_notebook(cells=[new_markdown_cell("# x"), new_code_cell("a()"), new_code_cell("b()")])
    nb.cells[2].metadata["jumper"] = {"wall_s": 99.0}  # from an earlier run
    cells = [ExecutedCell(index=1, source="a()", status="ok", wall_s=0.5)]

    annotate(nb, build_rows(cells, None), {"version": "0.1.0"})

    assert nb.cells[1].metadata["jumper"] == {"status": "ok", "wall_s": 0.5}
    assert "jumper" not in nb.cells[2].metadata and "jumper" not in nb.cells[0].metadata
    assert nb.metadata["jumper"] == {"version": "0.1.0"}

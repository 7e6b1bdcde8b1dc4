"""The browser checks as tests: JupyterLab in Debian's Chromium, offline, through the proxy.

Each runs its script in a process of its own (Playwright's sync API wants its own event loop)
and fails with the checks that failed. They need Chromium, JupyterLab and Playwright; where
those are not installed they are skipped, saying what to install.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists()
        or any(importlib.util.find_spec(m) is None for m in ("playwright", "jupyterlab")),
        reason="needs a browser: apt-get install chromium; pip install jupyterlab playwright",
    ),
]

HERE = Path(__file__).resolve().parent


def run_check(script: str, out: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(HERE / script), str(out)],
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    checks = json.loads((out / "report.json").read_text())["checks"]
    failed = [f"{name}: {detail}" for name, ok, detail in checks if not ok]
    assert result.returncode == 0 and not failed, "\n".join(failed) or result.stdout[-4000:]


def test_the_jupyterlab_debugger_stops_at_a_breakpoint(tmp_path: Path) -> None:
    run_check("debugger_breakpoint.py", tmp_path)


def test_graphs_draw_and_draw_again_when_the_saved_notebook_is_reopened(tmp_path: Path) -> None:
    run_check("screenshot_graphs.py", tmp_path)


def test_the_html_report_draws_every_graph_offline(tmp_path: Path) -> None:
    run_check("report_page.py", tmp_path)

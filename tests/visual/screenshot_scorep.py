"""Visual check: do Score-P's results show in JupyterLab, offline, with real Score-P?

What it does, on 127.0.0.1 only (JupyterLab, Chromium and the kernelspec as in
``screenshot_graphs.py``, whose helpers it uses):

1. writes a notebook that turns tracing and thread support on, runs an instrumented cell (recursive and numpy work
   and a second thread), asks for ``%%display_scorep_profile`` and ``%%display_scorep_trace``,
   then runs a cell of 200,000 short calls and asks for its trace (which is reduced);
2. runs it with *Run All Cells* in JupyterLab driven by Playwright and Debian's Chromium;
3. checks in the page that the top-regions table follows the instrumented cell, that the
   profile drew its bar chart and the call tree, that each trace drew a timeline with a row per
   thread and says what was reduced, that hovering a bar names its region, and that there were
   no console errors and no requests beyond 127.0.0.1; screenshots every cell.

The screenshots are the point: look at them. It needs what ``screenshot_graphs.py`` needs, and
Score-P (``make scorep``)::

    .venv/bin/python tests/visual/screenshot_scorep.py /tmp/shots-scorep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nbformat
from playwright.sync_api import Locator, Page, Route, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot_graphs import (
    BOKEH_PROBE,
    CHROMIUM,
    CHROMIUM_ARGS,
    KERNEL_NAME,
    LOCAL_HOSTS,
    TOOLTIP_PROBE,
    VIEWPORT,
    Report,
    Shooter,
    free_port,
    jupyterlab,
    kernel_status,
    prompts,
    run_all_from_menu,
    text_of,
    wait_for,
)

NOTEBOOK = "jumper_scorep.ipynb"
#: JupyterLab's own warning when the machine is busy; nothing to do with the outputs
SLOW_PLUGIN = re.compile(
    r"^Plugin \S+ (\(with \d+ dependants\) took [\d.]+ms|is taking too long) to activate"
)
CELLS: list[tuple[str, str]] = [
    (
        "setup",
        "import threading\n"
        "import numpy as np\n"
        "def fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "def crunch():\n"
        "    m = np.random.default_rng(0).random((400, 400))\n"
        "    return float((m @ m).sum())\n"
        "def worker():\n"
        "    for _ in range(3):\n"
        "        fib(16)\n"
        "data = np.arange(1_000_000)",
    ),
    ("tracing-on", "%%scorep_env\nSCOREP_ENABLE_TRACING=true"),
    ("threads", "%%scorep_python_binding_arguments --thread=pthread"),
    (
        "instrumented",
        "%%execute_with_scorep\n"
        "t = threading.Thread(target=worker)\n"
        "t.start()\n"
        "total = fib(18) + crunch()\n"
        "t.join()\n"
        "print('total', round(total))",
    ),
    ("profile", "%%display_scorep_profile"),
    ("trace", "%%display_scorep_trace"),
    (
        "many-calls",
        "%%execute_with_scorep\ndef tick():\n    pass\nfor _ in range(200_000):\n    tick()",
    ),
    ("trace-reduced", "%%display_scorep_trace"),
]


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python 3 (jumper-proxy)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for _, source in CELLS]
    nbformat.write(nb, path)


def cell(page: Page, label: str) -> Locator:
    index = [name for name, _ in CELLS].index(label)
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)


def output(page: Page, label: str) -> Locator:
    return cell(page, label).locator(".jp-OutputArea")


def bokeh_views(page: Page, label: str) -> dict[str, Any]:
    out = output(page, label)
    out.scroll_into_view_if_needed()
    page.wait_for_timeout(400)
    probe: dict[str, Any] = out.evaluate(BOKEH_PROBE)
    return probe


def check_summary(page: Page, report: Report) -> None:
    table = output(page, "instrumented").locator("table.jumper-scorep-summary")
    rows = table.locator("tbody tr").all_text_contents()
    report.outputs["summary"] = rows
    report.check(
        "top regions under the instrumented cell",
        table.count() == 1 and any("__main__:fib" in row for row in rows),
        f"{len(rows)} rows: {rows[:3]}",
    )
    report.check(
        "the cell's own output and experiment line",
        "Score-P experiment directory" in text_of(output(page, "instrumented")),
    )


def check_profile(page: Page, report: Report) -> None:
    probe = bokeh_views(page, "profile")
    views = probe["views"]
    drawn = [f for f in probe["figures"] if f[0] > 300 and f[1] > 150]
    tree = output(page, "profile").locator("table.jumper-scorep-calltree tbody tr")
    paths = tree.all_text_contents()
    report.outputs["profile"] = {"bokeh": probe, "call tree": paths[:20]}
    report.check("profile: one bar chart drawn", len(drawn) == 1, f"sizes {probe['figures']}")
    report.check(
        "profile: inclusive and exclusive bars",
        views.get("bk-GlyphRenderer", 0) == 2,
        f"{views.get('bk-GlyphRenderer', 0)} glyph renderers",
    )
    report.check(
        "profile: call tree with the cell and its functions",
        any("cell [" in p for p in paths) and any("__main__:fib" in p for p in paths),
        f"{len(paths)} call paths",
    )


def check_trace(page: Page, label: str, report: Report, reduced: bool) -> None:
    probe = bokeh_views(page, label)
    views = probe["views"]
    drawn = [f for f in probe["figures"] if f[0] > 300 and f[1] > 100]
    summary = text_of(output(page, label).locator("pre.jumper-summary"))
    report.outputs[label] = {"bokeh": probe, "summary": summary}
    report.check(f"{label}: one timeline drawn", len(drawn) == 1, f"sizes {probe['figures']}")
    report.check(
        f"{label}: bars and a toolbar",
        views.get("bk-GlyphRenderer", 0) >= 1 and views.get("bk-Toolbar", 0) == 1,
        f"{views.get('bk-GlyphRenderer', 0)} glyph renderers",
    )
    threads = re.search(r"(\d+) locations", summary)
    count = int(threads.group(1)) if threads else 0
    report.check(
        f"{label}: {'one row' if reduced else 'a row per thread'}",
        count == 1 if reduced else count >= 2,
        summary.splitlines()[1] if "\n" in summary else summary,
    )
    if reduced:
        report.check(
            f"{label}: says what was reduced",
            "Reduced to stay small" in summary,
            summary.splitlines()[-1] if summary else "",
        )


def hover_trace(page: Page, shoot: Shooter, report: Report) -> None:
    """Hover along the middle of the trace's timeline until a tooltip names a region."""
    figure = output(page, "trace").locator(".bk-Figure").first
    figure.scroll_into_view_if_needed()
    box = figure.bounding_box()
    if box is None:
        report.check("hover on the trace", False, "no figure")
        return
    text = ""
    for x in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8):
        for y in (0.25, 0.35, 0.55, 0.7):
            page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
            page.wait_for_timeout(250)
            text = " | ".join(page.evaluate(TOOLTIP_PROBE))
            if "region" in text:
                break
        if "region" in text:
            break
    shoot.element_shot("trace-hover", figure)
    report.check("hover on a trace bar names its region", "region" in text, text[:160])
    page.mouse.move(0, 0)


def drive(base: str, out: Path, report: Report, timeout: float) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]

        def only_local(route: Route) -> None:
            url = route.request.url
            report.request_count += 1
            if urlparse(url).scheme in ("http", "https", "ws", "wss") and (
                urlparse(url).hostname not in LOCAL_HOSTS
            ):
                report.blocked_requests.append(url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", only_local)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: (
                report.console.append(f"{msg.type}: {msg.text}")
                if msg.type in ("error", "warning") and not SLOW_PLUGIN.search(msg.text)
                else None
            ),
        )
        page.on("pageerror", lambda error: report.page_errors.append(str(error)))
        shoot = Shooter(page, out, report)

        page.goto(f"{base}/lab/tree/{NOTEBOOK}")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
        wait_for("the kernel to be idle", lambda: kernel_status(page).endswith("| Idle"), 60)
        run_all_from_menu(page)

        def finished() -> bool:
            return kernel_status(page).endswith("| Idle") and all(
                re.fullmatch(r"\[\d+\]:", p) for p in prompts(page)
            )

        try:
            wait_for("all cells to finish", finished, timeout)
        except TimeoutError as exc:
            shoot.page_shot("not-finished")
            raise TimeoutError(f"{exc}: {kernel_status(page)!r}, prompts {prompts(page)}") from None
        page.wait_for_timeout(1_500)
        report.check("every cell ran", True, " ".join(prompts(page)))
        errors = page.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
        report.check("no cell raised an error", errors == 0, f"{errors} error outputs")
        check_summary(page, report)
        check_profile(page, report)
        check_trace(page, "trace", report, reduced=False)
        check_trace(page, "trace-reduced", report, reduced=True)
        for label, _ in CELLS:
            shoot.element_shot(f"cell-{label}", cell(page, label))
        hover_trace(page, shoot, report)
        report.check("no browser console errors", not report.console, "; ".join(report.console))
        report.check("no page errors", not report.page_errors, "; ".join(report.page_errors))
        report.check(
            "no request beyond 127.0.0.1",
            not report.blocked_requests,
            f"{report.request_count} requests; blocked: {report.blocked_requests}",
        )
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="directory for the screenshots and report.json")
    parser.add_argument("--port", type=int, default=8898, help="JupyterLab's port (8898)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds for all cells")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: apt-get install chromium")
    scorep_config = shutil.which("scorep-config") or shutil.which(
        "scorep-config", path="/opt/scorep/bin"
    )
    if scorep_config is None:
        parser.error("no Score-P: make scorep installs it")
    # JupyterLab, and so the kernel it starts, find Score-P on PATH
    os.environ["PATH"] = f"{Path(scorep_config).parent}{os.pathsep}{os.environ['PATH']}"

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("[0-9][0-9]-*.png"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="jpvis-scorep-"))
    (work / "nb").mkdir()
    write_notebook(work / "nb" / NOTEBOOK)
    report = Report()
    try:
        with jupyterlab(work, free_port(args.port)) as base:
            drive(base, out, report, args.timeout)
    except Exception as exc:
        report.check("the run completed", False, f"{type(exc).__name__}: {exc}")
        log = work / "jupyterlab.log"
        if log.exists():
            print("---- JupyterLab log (tail) ----\n" + log.read_text(errors="replace")[-4000:])
    finally:
        (out / "report.json").write_text(json.dumps(asdict(report), indent=2))
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, ok, _ in report.checks if not ok]
    print(f"{len(report.screenshots)} screenshots and report.json in {out}")
    print(f"{len(failed)} of {len(report.checks)} checks failed: {failed}" if failed else "all ok")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

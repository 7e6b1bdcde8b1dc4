"""Visual check: do jumper-proxy's graphs, tables and live view show in JupyterLab, and again
when the saved notebook is reopened?

What it does, offline and on 127.0.0.1 only (the harness is ``lab.py``):

1. installs a jumper-proxy kernelspec into a temporary prefix and starts JupyterLab on it;
2. writes a notebook that burns CPU for 2 s, holds 300 MiB for 1.5 s, then asks for
   ``%%display_graph_for_last``, ``%%display_graph_for_all``, ``%%display_code_history``,
   turns on ``%%monitor_live``, sleeps 5 s, asks for ``%%display_graph_for_index 0 ...`` and
   ``%%jumper_help``, runs four quick cells and three 0.4 s cells and asks for
   ``%%display_graph_for_all cpu_percent`` (short cells on the timeline: their labels must not
   overlap);
3. opens it in JupyterLab with Playwright driving Debian's ``/usr/bin/chromium``, runs it
   with the menu *Run > Run All Cells*, screenshots the live view twice while the 5 s cell
   runs, then every cell with its outputs once all are done, and one bokeh hover tooltip;
4. checks in the page that each graph output drew its bokeh figures (lines, axes, a toolbar,
   on the timeline the cell spans and labels), that the text summaries, the history table and
   the help are there, that the live view updated, and that the figures put each cell's work
   in that cell (the 300 MiB belong to cell 1, not cell 0); it records browser console
   errors and warnings and blocks, and reports, any request not to 127.0.0.1;
5. saves the notebook and checks the file: BokehJS is in the first graph output only, every
   later graph output is under 300 KB; then shuts the kernel down, opens the notebook afresh
   (a new page load) and checks that every graph is drawn again, and screenshots them;
6. clears the output that carries BokehJS, saves and reopens: the other graphs must say that
   they wait for BokehJS (and how to get it back);
7. stops JupyterLab and removes the temporary directories.

The screenshots are the point: look at them. The checks only catch what is plainly broken.

It needs JupyterLab and Playwright in the virtual environment and Debian's Chromium (its own
browser download is not used)::

    .venv/bin/pip install jupyterlab playwright && apt-get install -y chromium

Run from the checkout::

    .venv/bin/python tests/visual/screenshot_graphs.py /tmp/shots

It writes ``NN-name.png`` files and ``report.json`` into the directory and exits with 1 when
a check failed. ``--keep`` keeps the temporary directory (notebook, server log).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
from lab import (
    Report,
    Shooter,
    all_cells_ran,
    browser_page,
    check_arguments,
    kernel_status,
    open_notebook,
    prompts,
    run_in_lab,
    text_of,
    wait_for,
)
from playwright.sync_api import Locator, Page

KERNEL_NAME = "jumper-proxy-vis"
NOTEBOOK = "jumper_graphs.ipynb"

#: (label, source) of each cell, in order; the labels name the screenshots
CELLS: list[tuple[str, str]] = [
    (
        "cpu-burn",
        "import time\n"
        "t0 = time.perf_counter()\n"
        "n = 0\n"
        "while time.perf_counter() - t0 < 2.0:\n"
        "    n += 1\n"
        'print(f"{n:,} loop iterations in 2 s")',
    ),
    (
        "memory-300mb",
        "import time\n"
        "block = bytearray(b'x') * (300 * 1024 * 1024)  # filled, so the pages are resident\n"
        "time.sleep(1.5)\n"
        "del block",
    ),
    ("graph-last", "%%display_graph_for_last"),
    ("graph-all", "%%display_graph_for_all"),
    ("code-history", "%%display_code_history"),
    ("monitor-live", "%%monitor_live on"),
    ("sleep-5s", 'import time\ntime.sleep(5)\nprint("slept 5 s")'),
    ("graph-index-0", "%%display_graph_for_index 0 cpu_percent memory_rss_bytes"),
    ("jumper-help", "%%jumper_help"),
    *((f"quick-{i}", f"x = {i}") for i in range(4)),
    *((f"short-{i}", "import time\ntime.sleep(0.4)") for i in range(3)),
    ("graph-all-short", "%%display_graph_for_all cpu_percent"),
]
#: graph cells: how many figures (CPU, memory, I/O by default) and line glyphs each must show
GRAPH_CELLS = {
    "graph-last": (3, 4),
    "graph-all": (3, 4),
    "graph-index-0": (2, 2),
    "graph-all-short": (1, 1),
}
#: the monitored cells on the last timeline: 0, 1, the 5 s sleep, four quick, three short
TIMELINE_CELLS = 10
#: the largest a graph output may be that does not carry BokehJS
LATER_OUTPUT_MAX = 300_000
MEASURED_BEFORE_HISTORY = 2  # cells 0 and 1; magics are not measured
LIVE_CELL = "sleep-5s"
HELP_MAGICS = (
    "jumper_help",
    "display_code_history",
    "display_code_for_index",
    "display_graph_for_last",
    "display_graph_for_index",
    "display_graph_for_all",
    "perfdata_to_variable",
    "perfdata_to_json",
    "monitor_live",
)
MIB = 1024 * 1024

#: What bokeh drew inside an element. BokehJS 3 renders every view into an open shadow root
#: whose host carries the view's class (bk-Figure, bk-Toolbar, bk-GlyphRenderer, ...).
BOKEH_PROBE = """(root) => {
  const views = {};
  const figures = [];
  const walk = (node) => {
    for (const el of node.querySelectorAll('*')) {
      if (!el.shadowRoot) continue;
      const name = String(el.className).split(' ')[0];
      views[name] = (views[name] || 0) + 1;
      if (name === 'bk-Figure') {
        const r = el.getBoundingClientRect();
        figures.push([Math.round(r.width), Math.round(r.height)]);
      }
      walk(el.shadowRoot);
    }
  };
  walk(root);
  return {views, figures};
}"""

#: The text of the bokeh tooltips on the page: BokehJS attaches them to the document, not to
#: the plot, and keeps their text in a shadow root.
TOOLTIP_PROBE = """() => {
  const texts = [];
  const walk = (node) => {
    for (const el of node.querySelectorAll('*')) {
      if (!el.shadowRoot) continue;
      if (/tooltip/i.test(String(el.className)) && el.getBoundingClientRect().width > 0) {
        const shown = Array.from(el.shadowRoot.children).filter((c) => c.tagName !== 'STYLE');
        texts.push(shown.map((c) => c.innerText).join(' ').replace(/\\s+/g, ' ').trim());
      }
      walk(el.shadowRoot);
    }
  };
  walk(document);
  return texts.filter((t) => t);
}"""


# ---- the page --------------------------------------------------------------------------


def cell(page: Page, label: str) -> Locator:
    index = [name for name, _ in CELLS].index(label)
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)


def output(page: Page, label: str) -> Locator:
    return cell(page, label).locator(".jp-OutputArea")


def run_all_from_menu(page: Page) -> None:
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def check_live_view(page: Page, shoot: Shooter, report: Report) -> None:
    """While the 5 s cell runs: the live line appears, is screenshot, and changes."""
    live = output(page, LIVE_CELL).locator(".jp-OutputArea-output").first
    live.get_by_text("running:").first.wait_for(timeout=60_000)
    first = text_of(live)
    cell(page, LIVE_CELL).scroll_into_view_if_needed()
    shoot.page_shot("live-view-running")
    page.wait_for_timeout(1_300)
    second = text_of(live)
    shoot.element_shot("live-view-updated", cell(page, LIVE_CELL))
    report.live_texts += [first, second]
    report.check("live view appears while the cell runs", "running:" in first, first)
    report.check("live view updates in place", first != second, second)


def check_graph(page: Page, label: str, report: Report, when: str = "") -> None:
    figures, lines = GRAPH_CELLS[label]
    out = output(page, label)
    out.scroll_into_view_if_needed()

    def drawn_in_full() -> bool:
        shown = out.evaluate(BOKEH_PROBE)["figures"]
        return len([f for f in shown if f[0] > 300 and f[1] > 150]) >= figures

    with contextlib.suppress(TimeoutError):  # what is missing then, the checks below say
        wait_for(page, f"{label} to be drawn", drawn_in_full, 30)
    probe: dict[str, Any] = out.evaluate(BOKEH_PROBE)
    views: dict[str, int] = probe["views"]
    summary = text_of(out.locator("pre.jumper-summary"))
    report.outputs[label + when] = {"bokeh": probe, "summary": summary}
    hint = out.locator("[id$='-hint']").count()
    drawn = [f for f in probe["figures"] if f[0] > 300 and f[1] > 150]
    label += when
    report.check(f"{label}: text summary", summary.startswith(("Cell ", "Cells ")), summary[:40])
    report.check(f"{label}: embed script ran (hint removed)", hint == 0)
    report.check(
        f"{label}: {figures} figures drawn", len(drawn) == figures, f"sizes {probe['figures']}"
    )
    report.check(
        f"{label}: lines and axes",
        views.get("bk-GlyphRenderer", 0) == lines and views.get("bk-LinearAxis", 0) == 2 * figures,
        f"{views.get('bk-GlyphRenderer', 0)} lines, {views.get('bk-LinearAxis', 0)} axes",
    )
    buttons = views.get("bk-OnOffButton", 0) + views.get("bk-ClickButton", 0)
    report.check(
        f"{label}: toolbar", views.get("bk-Toolbar", 0) == 1 and buttons >= 5, f"{buttons} tools"
    )
    if label.startswith("graph-all-short"):
        labels = views.get("bk-Label", 0)
        report.check(
            f"{label}: every cell's span, and fewer labels than cells (short cells share one)",
            views.get("bk-Span", 0) == TIMELINE_CELLS and 3 <= labels < TIMELINE_CELLS,
            f"{views.get('bk-Span', 0)} spans, {labels} labels",
        )
    elif label.startswith("graph-all"):
        report.check(
            f"{label}: cell spans and labels on the timeline",
            views.get("bk-Span", 0) == 2 * figures and views.get("bk-Label", 0) == 2,
            f"{views.get('bk-Span', 0)} spans, {views.get('bk-Label', 0)} labels",
        )


def peak_mib(summary: str, index: int) -> float:
    """The peak RSS of cell ``index`` in a text summary, in MiB."""
    block = re.search(rf"Cell {index} \(.*?(?=\n\nCell |\Z)", summary, re.S)
    found = re.search(r"Memory: peak ([\d.]+) (B|KiB|MiB|GiB)", block.group(0)) if block else None
    if found is None:
        return float("nan")
    scale = {"B": 1 / MIB, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}[found.group(2)]
    return float(found.group(1)) * scale


def check_attribution(report: Report) -> None:
    """The 300 MiB of cell 1 must show in cell 1, not in cell 0 (which allocates nothing).

    Run All queues both cells in the upstream, so the proxy learns that cell 0 ended from the
    upstream's idle message; this check fails when that message arrives late.
    """
    summary = report.outputs["graph-all"]["summary"]
    cell0, cell1 = peak_mib(summary, 0), peak_mib(summary, 1)
    report.check(
        "each cell's memory is its own (cell 0 < 250 MiB <= cell 1)",
        cell0 < 250 <= cell1,
        f"peak RSS cell 0 {cell0:.0f} MiB, cell 1 {cell1:.0f} MiB",
    )


def hover_tooltip(page: Page, shoot: Shooter, report: Report) -> None:
    """Hover over the timeline's CPU figure: the tooltip names the line, time and value."""
    figure = output(page, "graph-all").locator(".bk-Figure").first
    figure.scroll_into_view_if_needed()
    box = figure.bounding_box()
    if box is None:
        report.check("hover tooltip", False, "no figure to hover")
        return
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.wait_for_timeout(500)
    text = " | ".join(page.evaluate(TOOLTIP_PROBE))
    shoot.element_shot("graph-all-hover", figure)
    report.check("hover tooltip on the timeline", "cpu_percent" in text and " s" in text, text)
    page.mouse.move(0, 0)


def drive(base: str, work: Path, out: Path, report: Report, timeout: float) -> None:
    with browser_page(report) as page:
        shoot = Shooter(page, out, report)
        open_notebook(page, base, NOTEBOOK, report)
        shoot.page_shot("notebook-opened")

        run_all_from_menu(page)
        check_live_view(page, shoot, report)
        try:
            wait_for(page, "all cells to finish", lambda: all_cells_ran(page), timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {kernel_status(page)!r}, prompts {prompts(page)}") from None
        page.wait_for_timeout(1_500)  # the last graph's layout
        report.check("every cell ran", True, " ".join(prompts(page)))
        errors = page.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
        report.check("no cell raised an error", errors == 0, f"{errors} error outputs")
        report.live_texts.append(text_of(output(page, LIVE_CELL)))

        for label in GRAPH_CELLS:
            check_graph(page, label, report)
        check_attribution(report)
        rows = output(page, "code-history").locator("table tbody tr").all_text_contents()
        report.outputs["code-history"] = rows
        report.check(
            "code history: one row per measured cell",
            len(rows) == MEASURED_BEFORE_HISTORY,
            f"{len(rows)} rows",
        )
        help_text = text_of(output(page, "jumper-help"))
        missing = [m for m in HELP_MAGICS if f"%%{m}" not in help_text]
        report.check("%%jumper_help lists every magic", not missing, f"missing: {missing}")

        for label, _ in CELLS:
            shoot.element_shot(f"cell-{label}", cell(page, label))
        hover_tooltip(page, shoot, report)
        page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").first.evaluate(
            "el => el.scrollTo(0, 0)"
        )
        shoot.page_shot("notebook-top")

        save_and_check_sizes(page, work / "nb" / NOTEBOOK, report)
        left = page.evaluate(SHUT_DOWN_SESSIONS)  # as when the notebook is reopened later
        report.check("kernel shut down before reopening", left == 0, f"{left} sessions left")
        page.goto("about:blank")  # nothing of the first page stays: BokehJS is gone too
        open_notebook(page, base, NOTEBOOK, report)
        page.wait_for_timeout(1_500)
        for label in GRAPH_CELLS:
            check_graph(page, label, report, when=" after reopening")
            shoot.element_shot(f"reopened-{label}", cell(page, label))
        without_the_carrier(page, base, work / "nb" / NOTEBOOK, shoot, report)
        report.check_page_was_clean()


def without_the_carrier(page: Page, base: str, path: Path, shoot: Shooter, report: Report) -> None:
    """Clear the output that carries BokehJS, save, reopen: the other graphs cannot be drawn
    and say why."""
    first, *later = GRAPH_CELLS
    cell(page, first).locator(".jp-InputPrompt").click()  # selects the cell
    cell(page, first).locator(".jp-InputPrompt").click(button="right")
    page.get_by_role("menuitem", name="Clear Cell Output").click()
    wait_for(
        page,
        "the output to be cleared",
        lambda: output(page, first).count() == 0 or not text_of(output(page, first)),
        10,
    )
    save(page, path)
    page.goto("about:blank")
    open_notebook(page, base, NOTEBOOK, report)
    page.wait_for_timeout(1_500)
    hints = [
        text_of(hint) if hint.count() else "(drawn)"
        for hint in (output(page, label).locator("[id$='-hint']") for label in later)
    ]
    drawn = [output(page, label).evaluate(BOKEH_PROBE)["figures"] for label in later]
    report.check(
        "carrier cleared: the later graphs say they wait for BokehJS",
        all(hint.startswith("Waiting for BokehJS") for hint in hints) and not any(drawn),
        f"{hints[0][:60]}..., figures {drawn}",
    )
    shoot.element_shot(f"carrier-cleared-{later[0]}", cell(page, later[0]))


def save(page: Page, path: Path) -> None:
    """Save from the toolbar; done when the server has answered (JupyterLab then marks the
    tab clean), not when the file changes: the server writes it in place."""
    before = path.stat().st_mtime_ns
    dirty = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")
    page.locator(".jp-NotebookPanel-toolbar [data-command='docmanager:save']").first.click()
    wait_for(
        page,
        "the notebook to be saved",
        lambda: path.stat().st_mtime_ns != before and dirty.count() == 0,
        30,
    )


def save_and_check_sizes(page: Page, path: Path, report: Report) -> None:
    """Save the notebook; in the file, BokehJS is in the first graph output only and every
    later graph output is under LATER_OUTPUT_MAX."""
    save(page, path)
    nb = nbformat.read(path, as_version=4)
    labels = [name for name, _ in CELLS]
    sizes = {
        name: len(json.dumps(nb.cells[labels.index(name)].outputs).encode()) for name in GRAPH_CELLS
    }
    report.outputs["saved-sizes"] = sizes
    carriers = [
        name for name in GRAPH_CELLS if "BEGIN bokeh.min.js" in str(nb.cells[labels.index(name)])
    ]
    first, *later = GRAPH_CELLS
    report.check(
        "saved: BokehJS in the first graph output only", carriers == [first], f"{carriers}"
    )
    report.check(
        f"saved: later graph outputs under {LATER_OUTPUT_MAX // 1000} KB",
        all(sizes[name] < LATER_OUTPUT_MAX for name in later),
        ", ".join(f"{name} {size / 1000:.0f} KB" for name, size in sizes.items()),
    )


#: ends every session of the server from the page, with the XSRF token JupyterLab uses itself
SHUT_DOWN_SESSIONS = """async () => {
  const cookie = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
  const headers = {"X-XSRFToken": cookie ? decodeURIComponent(cookie[1]) : ""};
  const sessions = await (await fetch("/api/sessions")).json();
  for (const session of sessions) {
    await fetch("/api/sessions/" + session.id, {method: "DELETE", headers});
  }
  return (await (await fetch("/api/sessions")).json()).length;
}"""


def main(argv: list[str] | None = None) -> int:
    parser = check_arguments(__doc__ or "", 8899)
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds for all cells to finish (180)"
    )
    args = parser.parse_args(argv)
    return run_in_lab(
        args,
        KERNEL_NAME,
        (NOTEBOOK, [source for _, source in CELLS]),
        lambda base, work, report: drive(base, work, args.out, report, args.timeout),
    )


if __name__ == "__main__":
    sys.exit(main())

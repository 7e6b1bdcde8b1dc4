"""Visual check: do jumper-proxy's graphs, tables and live view show in JupyterLab?

What it does, offline and on 127.0.0.1 only:

1. installs a jumper-proxy kernelspec into a temporary prefix and starts JupyterLab on it
   (``JUPYTER_PATH`` points there; config, data, runtime, settings and workspace dirs are
   temporary too, and JupyterLab's news and update checks are off);
2. writes a notebook that burns CPU for 2 s, holds 300 MiB for 1.5 s, then asks for
   ``%%display_graph_for_last``, ``%%display_graph_for_all``, ``%%display_code_history``,
   turns on ``%%monitor_live``, sleeps 5 s, asks for ``%%display_graph_for_index 0 ...`` and
   ``%%jumper_help``;
3. opens it in JupyterLab with Playwright driving Debian's ``/usr/bin/chromium``, runs it
   with the menu *Run > Run All Cells*, screenshots the live view twice while the 5 s cell
   runs, then every cell with its outputs once all are done, and one bokeh hover tooltip;
4. checks in the page that each graph output drew its bokeh figures (lines, axes, a toolbar,
   on the timeline the cell spans and labels), that the text summaries, the history table and
   the help are there, that the live view updated, and that the figures put each cell's work
   in that cell (the 300 MiB belong to cell 1, not cell 0); it records browser console
   errors and warnings and blocks, and reports, any request not to 127.0.0.1;
5. stops the kernel and JupyterLab and removes the temporary directories.

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

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nbformat
from playwright.sync_api import ConsoleMessage, Locator, Page, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
KERNEL_NAME = "jumper-proxy-vis"
NOTEBOOK = "jumper_graphs.ipynb"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VIEWPORT = {"width": 1400, "height": 1000}

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
]
#: graph cells: how many figures (CPU, memory, I/O by default) and line glyphs each must show
GRAPH_CELLS = {"graph-last": (3, 4), "graph-all": (3, 4), "graph-index-0": (2, 2)}
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


@dataclass
class Report:
    """Everything the run saw; written to report.json."""

    screenshots: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    request_count: int = 0
    live_texts: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, ok, detail))
        print(f"[{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


# ---- JupyterLab ------------------------------------------------------------------------


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python 3 (jumper-proxy)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for _, source in CELLS]
    nbformat.write(nb, path)


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def server_up(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/api/status", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


@contextmanager
def jupyterlab(work: Path, port: int) -> Iterator[str]:
    """JupyterLab serving ``work/nb`` with the kernelspec in ``work/prefix``; yields its URL."""
    bindir = Path(sys.prefix) / "bin"
    prefix = work / "prefix"
    subprocess.run(
        [str(bindir / "jumper-proxy"), "install", "--prefix", str(prefix), "--name", KERNEL_NAME],
        check=True,
        capture_output=True,  # it warns that the prefix is not on Jupyter's default path
    )
    settings = work / "lab-settings"
    no_news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    no_news.parent.mkdir(parents=True)
    no_news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ)
    env.update(
        JUPYTER_PATH=str(prefix / "share" / "jupyter"),
        JUPYTER_CONFIG_DIR=str(work / "config"),
        JUPYTER_DATA_DIR=str(work / "data"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "lab-workspaces"),
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [
        str(bindir / "jupyter"),
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={work / 'nb'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with (work / "jupyterlab.log").open("wb") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while not server_up(base):
                if server.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited ({server.returncode}); see its log")
                if time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start within 60 s")
                time.sleep(0.5)
            yield base
        finally:
            server.send_signal(signal.SIGTERM)  # it shuts its kernels down, then exits
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)  # its own session: only what it started
                server.wait()


# ---- the page --------------------------------------------------------------------------


def cell(page: Page, label: str) -> Locator:
    index = [name for name, _ in CELLS].index(label)
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)


def output(page: Page, label: str) -> Locator:
    return cell(page, label).locator(".jp-OutputArea")


def text_of(target: Locator) -> str:
    # text content, not inner text: JupyterLab skips rendering cells out of view
    # (content-visibility), and their inner text is empty
    return (target.text_content() or "").strip()


def prompts(page: Page) -> list[str]:
    prompt = page.locator(".jp-NotebookPanel .jp-Cell .jp-InputArea .jp-InputPrompt")
    return [t.strip() for t in prompt.all_text_contents()]


def kernel_status(page: Page) -> str:
    """The status bar's "KERNEL NAME | Idle" item ("" until a kernel is connected)."""
    item = page.locator(".jp-StatusBar-Item", has_text=" | ")
    return item.first.inner_text().strip() if item.count() else ""


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.25)


class Shooter:
    """Numbered screenshots into the output directory."""

    def __init__(self, page: Page, out: Path, report: Report) -> None:
        self.page, self.out, self.report = page, out, report
        self.n = 0

    def _path(self, name: str) -> Path:
        self.n += 1
        path = self.out / f"{self.n:02d}-{name}.png"
        self.report.screenshots.append(str(path))
        return path

    def page_shot(self, name: str) -> None:
        self.page.screenshot(path=self._path(name), full_page=True)

    def element_shot(self, name: str, target: Locator) -> None:
        """The element in full: the viewport grows to fit it, so nothing is clipped."""
        target.scroll_into_view_if_needed()
        box = target.bounding_box()
        height = int(box["height"]) if box else 0
        if height + 250 > VIEWPORT["height"]:
            self.page.set_viewport_size({"width": VIEWPORT["width"], "height": height + 300})
            self.page.wait_for_timeout(500)  # JupyterLab and bokeh follow the resize
            target.scroll_into_view_if_needed()
        target.screenshot(path=self._path(name))
        self.page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]


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


def check_graph(page: Page, label: str, report: Report) -> None:
    figures, lines = GRAPH_CELLS[label]
    out = output(page, label)
    out.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    probe: dict[str, Any] = out.evaluate(BOKEH_PROBE)
    views: dict[str, int] = probe["views"]
    summary = text_of(out.locator("pre.jumper-summary"))
    report.outputs[label] = {"bokeh": probe, "summary": summary}
    hint = out.get_by_text("The interactive graph appears when").count()
    drawn = [f for f in probe["figures"] if f[0] > 300 and f[1] > 150]
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
    if label == "graph-all":
        report.check(
            "graph-all: cell spans and labels on the timeline",
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


def drive(base: str, out: Path, report: Report, timeout: float) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]

        def only_local(route: Route) -> None:
            url = route.request.url
            report.request_count += 1
            remote = urlparse(url).scheme in ("http", "https", "ws", "wss") and (
                urlparse(url).hostname not in LOCAL_HOSTS
            )
            if remote:
                report.blocked_requests.append(url)
                route.abort()
            else:
                route.continue_()

        def console(msg: ConsoleMessage) -> None:
            if msg.type in ("error", "warning"):
                report.console.append(f"{msg.type}: {msg.text}")

        context.route("**/*", only_local)
        page = context.new_page()
        page.on("console", console)
        page.on("pageerror", lambda error: report.page_errors.append(str(error)))
        page.on(
            "websocket",
            lambda ws: (
                report.blocked_requests.append(ws.url)
                if urlparse(ws.url).hostname not in LOCAL_HOSTS
                else None
            ),
        )
        shoot = Shooter(page, out, report)

        page.goto(f"{base}/lab/tree/{NOTEBOOK}")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
        wait_for("the kernel to be idle", lambda: kernel_status(page).endswith("| Idle"), 60)
        status = kernel_status(page)
        report.check(
            "notebook opened with the jumper-proxy kernel", "jumper-proxy" in status, status
        )
        shoot.page_shot("notebook-opened")

        run_all_from_menu(page)
        check_live_view(page, shoot, report)

        def finished() -> bool:
            return kernel_status(page).endswith("| Idle") and all(
                re.fullmatch(r"\[\d+\]:", p) for p in prompts(page)
            )

        try:
            wait_for("all cells to finish", finished, timeout)
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
    parser.add_argument("--port", type=int, default=8899, help="JupyterLab's port (8899)")
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds for all cells to finish (180)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (notebook, server log)"
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: apt-get install chromium")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("[0-9][0-9]-*.png"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="jpvis-"))
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

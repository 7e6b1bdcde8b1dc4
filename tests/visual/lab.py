"""The harness of the browser checks: JupyterLab on 127.0.0.1 with a jumper-proxy kernelspec,
Debian's Chromium driven by Playwright with every request beyond 127.0.0.1 blocked, numbered
screenshots, and a report of checks, console errors and warnings (JupyterLab's notes that a
plugin of its own was slow to start, which a busy machine gives, are kept apart) and blocked
requests.

Everything lives in a temporary directory (kernelspec prefix, Jupyter's config, data, runtime,
settings and workspace dirs); JupyterLab's news and update checks are off.
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
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
#: JupyterLab's own timing notes on a busy machine, about its plugins, not about any output
SLOW_PLUGIN = re.compile(
    r"^Plugin \S+ (\(with \d+ dependants?\) took [\d.]+ms|is taking too long) to activate\.$"
)
VIEWPORT = {"width": 1400, "height": 1000}


@dataclass
class Report:
    """Everything a run saw; written to report.json."""

    screenshots: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    slow_plugins: list[str] = field(default_factory=list)
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

    def write(self, out: Path) -> None:
        (out / "report.json").write_text(json.dumps(asdict(self), indent=2))

    def check_page_was_clean(self) -> None:
        self.check("no browser console errors", not self.console, "; ".join(self.console))
        self.check("no page errors", not self.page_errors, "; ".join(self.page_errors))
        self.check(
            "no request beyond 127.0.0.1",
            not self.blocked_requests,
            f"{self.request_count} requests; blocked: {self.blocked_requests}",
        )

    def summary(self, out: Path) -> int:
        failed = [name for name, ok, _ in self.checks if not ok]
        print(f"{len(self.screenshots)} screenshots and report.json in {out}")
        print(
            f"{len(failed)} of {len(self.checks)} checks failed: {failed}" if failed else "all ok"
        )
        return 0 if self.ok else 1


def write_notebook(path: Path, kernel_name: str, sources: list[str]) -> None:
    """A notebook of code cells ``sources`` saved for the jumper-proxy kernel ``kernel_name``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": kernel_name,
        "display_name": "Python 3 (jumper-proxy)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
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
def jupyterlab(work: Path, port: int, kernel_name: str) -> Iterator[str]:
    """JupyterLab serving ``work/nb`` with a jumper-proxy kernelspec ``kernel_name`` in
    ``work/prefix``; yields its URL."""
    bindir = Path(sys.prefix) / "bin"
    prefix = work / "prefix"
    subprocess.run(
        [str(bindir / "jumper-proxy"), "install", "--prefix", str(prefix), "--name", kernel_name],
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


@contextmanager
def browser_page(report: Report) -> Iterator[Page]:
    """A Chromium page that reports console errors and page errors and blocks (and reports)
    every request beyond 127.0.0.1."""
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
            if msg.type == "warning" and SLOW_PLUGIN.match(msg.text):
                report.slow_plugins.append(msg.text)
            elif msg.type in ("error", "warning"):
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
        try:
            yield page
        finally:
            browser.close()


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


def wait_for(page: Page, what: str, predicate: Callable[[], bool], timeout: float) -> None:
    """Poll ``predicate`` until it holds. The page's own clock waits between polls: with
    Playwright's sync API, request routes (``browser_page``) are served only while a Playwright
    call runs, so a plain sleep would hold every request of the page."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        page.wait_for_timeout(250)


def open_notebook(page: Page, base: str, name: str, report: Report) -> None:
    """Open ``name`` in JupyterLab and wait until its jumper-proxy kernel is idle."""
    page.goto(f"{base}/lab/tree/{name}")
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    wait_for(page, "the kernel to be idle", lambda: kernel_status(page).endswith("| Idle"), 60)
    status = kernel_status(page)
    report.check("notebook opened with the jumper-proxy kernel", "jumper-proxy" in status, status)


def all_cells_ran(page: Page) -> bool:
    return kernel_status(page).endswith("| Idle") and all(
        re.fullmatch(r"\[\d+\]:", p) for p in prompts(page)
    )


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


def check_arguments(description: str, port: int) -> argparse.ArgumentParser:
    """The command line every check shares: the output directory, JupyterLab's port, --keep."""
    parser = argparse.ArgumentParser(description=description.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="directory for the screenshots and report.json")
    parser.add_argument("--port", type=int, default=port, help=f"JupyterLab's port ({port})")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (notebook, server log)"
    )
    return parser


def prepare_out(out: Path) -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("[0-9][0-9]-*.png"):
        old.unlink()


def run_in_lab(
    args: argparse.Namespace,
    kernel_name: str,
    notebook: tuple[str, list[str]],
    drive: Callable[[str, Path, Report], None],
) -> int:
    """One check: the ``notebook`` (name, cell sources) in ``work/nb``, JupyterLab on it with
    a kernelspec ``kernel_name``, ``drive(url, work, report)``; the report written to
    ``args.out`` whatever happens, and the exit code (1 when a check failed)."""
    out: Path = args.out
    prepare_out(out)
    work = Path(tempfile.mkdtemp(prefix="jpcheck-"))
    (work / "nb").mkdir()
    name, sources = notebook
    write_notebook(work / "nb" / name, kernel_name, sources)
    report = Report()
    try:
        with jupyterlab(work, free_port(args.port), kernel_name) as base:
            drive(base, work, report)
    except Exception as exc:
        report.check("the run completed", False, f"{type(exc).__name__}: {exc}")
        log = work / "jupyterlab.log"
        if log.exists():
            print("---- JupyterLab log (tail) ----\n" + log.read_text(errors="replace")[-4000:])
    finally:
        report.write(out)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report.summary(out)

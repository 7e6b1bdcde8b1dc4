"""Browser check: JupyterLab's debugger works through jumper-proxy.

What it does, offline and on 127.0.0.1 only (the harness is ``lab.py``):

1. installs a jumper-proxy kernelspec (wrapping ``python3``, whose kernelspec declares the
   debugger) into a temporary prefix and starts JupyterLab on it;
2. opens a notebook whose cell sets ``width`` and ``height`` and then multiplies them;
3. checks that the notebook's debugger switch is enabled (JupyterLab enables it from the
   kernelspec's ``metadata.debugger``), turns it on, sets a breakpoint on the multiplying
   line by clicking its gutter, and runs the cell;
4. checks that the debugger stops there: the call stack shows the cell's frame, the line is
   highlighted, the cell is still running and its output is not there yet, and the variables
   panel shows ``width`` = 3 and ``height`` = 4;
5. continues, and checks that the cell finishes with its output;
6. screenshots each step and reports console errors and any request beyond 127.0.0.1.

Run from the checkout (needs JupyterLab, Playwright and Debian's Chromium)::

    .venv/bin/python tests/visual/debugger_breakpoint.py /tmp/debugger-shots
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lab import (
    Report,
    Shooter,
    all_cells_ran,
    browser_page,
    check_arguments,
    open_notebook,
    run_in_lab,
    text_of,
    wait_for,
)
from playwright.sync_api import Page

KERNEL_NAME = "jumper-proxy-debug"
NOTEBOOK = "debug_me.ipynb"
SOURCE = 'width = 3\nheight = 4\narea = width * height\nprint(f"area {area}")'
BREAKPOINT_LINE = 3


def variables(page: Page) -> dict[str, str]:
    """The variables panel's tree: name to value, top level only."""
    items = page.locator(".jp-DebuggerVariables-body jp-tree-view > jp-tree-item")
    found: dict[str, str] = {}
    for item in items.all():
        name = text_of(item.locator(":scope > .jp-DebuggerVariables-name"))
        if name:
            found[name] = text_of(item.locator(":scope > .jp-DebuggerVariables-detail"))
    return found


def drive(base: str, out: Path, report: Report) -> None:
    with browser_page(report) as page:
        shoot = Shooter(page, out, report)
        open_notebook(page, base, NOTEBOOK, report)
        switch = page.locator(".jp-NotebookPanel-toolbar .jp-DebuggerBugButton")
        wait_for(page, "the debugger switch", lambda: switch.count() > 0, 30)
        enabled = switch.first.get_attribute("aria-disabled") != "true"
        report.check("the debugger switch is enabled for the proxy's kernel", enabled)
        shoot.page_shot("debugger-switch")
        switch.first.click()
        page.locator(".jp-DebuggerCallstack").first.wait_for(timeout=30_000)

        cell = page.locator(".jp-NotebookPanel .jp-Cell").first
        gutter = cell.locator(".cm-breakpoint-gutter .cm-gutterElement")
        wait_for(page, "the breakpoint gutter", lambda: gutter.count() >= BREAKPOINT_LINE, 30)
        gutter.nth(BREAKPOINT_LINE).click()  # the first element is the gutter's spacer
        listed = page.locator(".jp-DebuggerBreakpoint")  # the debugger's list of breakpoints
        wait_for(page, "the breakpoint in the debugger's list", lambda: listed.count() > 0, 10)
        marked = [
            i
            for i in range(1, gutter.count())
            if gutter.nth(i).locator(".cm-breakpoint-icon").count()
        ]
        report.check(
            "a breakpoint is set on line 3",
            listed.count() == 1 and marked == [BREAKPOINT_LINE],
            f"{listed.count()} listed, marked lines {marked}: {text_of(listed.first)}",
        )

        cell.locator(".jp-InputPrompt").click()
        page.keyboard.press("Control+Enter")  # runs the cell, stays on it
        frames = page.locator(".jp-DebuggerCallstackFrame")
        wait_for(page, "the debugger to stop", lambda: frames.count() > 0, 60)
        wait_for(page, "the variables", lambda: {"width", "height"} <= set(variables(page)), 30)
        seen = variables(page)
        highlighted = cell.locator(".jp-DebuggerEditor-highlight")
        prompt = text_of(cell.locator(".jp-InputPrompt"))
        report.check(
            "the debugger stopped at the breakpoint",
            frames.count() > 0 and highlighted.count() == 1 and "area" not in seen,
            f"{frames.count()} frames, {highlighted.count()} highlighted lines, prompt {prompt}",
        )
        report.check(
            "the cell waits at the breakpoint: still running, no output yet",
            prompt == "[*]:" and not text_of(cell.locator(".jp-OutputArea")),
            prompt,
        )
        report.check(
            "the variables panel shows the cell's variables",
            seen.get("width") == "3" and seen.get("height") == "4",
            f"width={seen.get('width')}, height={seen.get('height')}",
        )
        shoot.page_shot("stopped-at-breakpoint")

        page.get_by_role("button", name=re.compile(r"^Continue")).first.click()
        wait_for(page, "the cell to finish", lambda: all_cells_ran(page), 60)
        output = text_of(cell.locator(".jp-OutputArea"))
        report.check("after continue the cell finishes", output == "area 12", output)
        shoot.page_shot("continued")
        report.check_page_was_clean()


def main(argv: list[str] | None = None) -> int:
    args = check_arguments(__doc__ or "", 8898).parse_args(argv)
    return run_in_lab(
        args,
        KERNEL_NAME,
        (NOTEBOOK, [SOURCE]),
        lambda base, _work, report: drive(base, args.out, report),
    )


if __name__ == "__main__":
    sys.exit(main())

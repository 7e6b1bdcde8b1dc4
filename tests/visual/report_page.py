"""Browser check: the report of ``jumper-proxy run --html`` draws every graph offline.

It runs ``examples/demo.ipynb`` through the proxy with ``--html``, opens the report from the
file system in Debian's Chromium with every request beyond the file itself blocked, checks
that each embedded graph drew its figures, and screenshots the page.

Run from the checkout::

    .venv/bin/python tests/visual/report_page.py /tmp/report-shots
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import Report, Shooter, browser_page, prepare_out
from screenshot_graphs import BOKEH_PROBE

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.ipynb"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="directory for the screenshots and report.json")
    out: Path = parser.parse_args(argv).out
    prepare_out(out)
    report = Report()
    try:
        with tempfile.TemporaryDirectory(prefix="jpreport-") as work:
            page_file = Path(work) / "demo.html"
            executed = Path(work) / "demo.out.ipynb"
            run = ["run", str(DEMO), "--upstream", "python3", "-o", str(executed)]
            subprocess.run(
                [sys.executable, "-m", "jumper_proxy", *run, "--html", str(page_file)],
                cwd=ROOT,
                capture_output=True,
                check=True,
                timeout=300,
            )
            graphs = page_file.read_text().count("embed_item(")
            with browser_page(report) as page:
                page.goto(page_file.as_uri())
                page.wait_for_timeout(2_000)
                probe = page.locator("body").evaluate(BOKEH_PROBE)
                roots = page.evaluate(
                    '() => document.querySelectorAll(\'[id^="jumper-"]:not([id$="-hint"])\').length'
                )
                drawn = [f for f in probe["figures"] if f[0] > 300 and f[1] > 150]
                hints = page.locator("[id$='-hint']").count()
                report.check(
                    "every graph of the report is drawn",
                    graphs == roots and hints == 0 and len(drawn) >= graphs,
                    f"{graphs} graphs, {len(drawn)} figures, {hints} hints left",
                )
                Shooter(page, out, report).page_shot("report")
                report.check_page_was_clean()
    except Exception as exc:
        report.check("the run completed", False, f"{type(exc).__name__}: {exc}")
    finally:
        report.write(out)
    return report.summary(out)


if __name__ == "__main__":
    sys.exit(main())

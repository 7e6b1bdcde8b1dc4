"""How a bokeh layout becomes HTML that draws offline, with BokehJS loaded once per page.

BokehJS (about 1.3 MB) travels inline, never from a network, and only with the first graph
output a process makes (:class:`BokehJSCarrier`): in a kernel session, the first graph of the
notebook; in ``jumper-proxy run``, the first graph output of the executed notebook. Every
output's script draws its graph as soon as this BokehJS version is on the page; until then it
waits in a queue that the carrier's script runs once BokehJS is evaluated, so the order in
which a frontend renders outputs does not matter. A reopened notebook draws all its graphs
again as long as the carrying output is in it; a graph waiting for a BokehJS that never comes
says so in its hint.

A page that is not a notebook (the ``--html`` report) puts :func:`bokehjs_script` in its
head once and embeds every layout without BokehJS.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from bokeh import __version__ as BOKEH_VERSION
from bokeh.embed import json_item
from bokeh.resources import Resources

__all__ = ["SESSION_BOKEHJS", "BokehJSCarrier", "bokehjs_script", "layout_html"]

#: the page-wide queue of graphs waiting for BokehJS
_WAITING = "jumperBokehWaiting"
HINT = "The interactive graph appears when the notebook is trusted and its JavaScript runs."
WAITING_HINT = (
    "Waiting for BokehJS, which comes with the first graph output of this kernel session. "
    "If that output is gone (cleared, or its cell deleted), restart the kernel and run the "
    "graph cells again."
)


@dataclass
class BokehJSCarrier:
    """Whether a process's graph outputs have carried BokehJS yet: the first one does, and so
    does a later output of the same notebook cell (its run again replaced the output that
    carried BokehJS)."""

    sent: bool = False
    #: the notebook cell (its ``cellId``) whose output carries BokehJS, where known
    cell: str | None = None

    def take(self, cell_id: str | None = None) -> bool:
        """Whether the output of cell ``cell_id`` that asks now carries BokehJS."""
        if self.sent and (cell_id is None or cell_id != self.cell):
            return False
        self.sent, self.cell = True, cell_id
        return True


#: the carrier of this process: one per kernel session (a proxy process), one per ``run``
SESSION_BOKEHJS = BokehJSCarrier()


def layout_html(
    layout: Any, carrier: BokehJSCarrier | None = SESSION_BOKEHJS, cell_id: str | None = None
) -> str:
    """The layout as HTML: a hint (removed once drawn), a target div and the script that
    draws into it. With a ``carrier`` whose turn it is (for the output of notebook cell
    ``cell_id``), BokehJS comes along; without one (``None``) the page is expected to load
    BokehJS itself (:func:`bokehjs_script`)."""
    target = f"jumper-{uuid.uuid4().hex}"
    item = json.dumps(json_item(layout)).replace("</", "<\\/")
    carry = carrier is not None and carrier.take(cell_id)
    parts = [
        f'<div id="{target}-hint" style="color:#888;font-size:small">{HINT}</div>',
        f'<div id="{target}"></div>',
    ]
    if carry:
        parts.append(f'<script type="text/javascript">{_loader()}</script>')
    parts.append(
        '<script type="text/javascript">(function () {\n'
        f'  var target = "{target}", version = "{BOKEH_VERSION}";\n'
        "  function draw() {\n"
        "    if (!document.getElementById(target)) { return; }  // the output was cleared\n"
        '    var hint = document.getElementById(target + "-hint");\n'
        "    if (hint) { hint.remove(); }\n"
        f"    window.Bokeh[version].embed.embed_item({item}, target);\n"
        "  }\n"
        "  if (window.Bokeh && window.Bokeh[version]) { draw(); return; }\n"
        f"  (window.{_WAITING} = window.{_WAITING} || []).push(draw);\n"
        '  var waiting = document.getElementById(target + "-hint");\n'
        f"  if (waiting) {{ waiting.textContent = {json.dumps(WAITING_HINT)}; }}\n"
        "})();</script>"
    )
    return "\n".join(parts)


def bokehjs_script() -> str:
    """A script element that loads BokehJS inline (once per page) and draws what waits."""
    return f'<script type="text/javascript">{_loader()}</script>'


@functools.cache
def _loader() -> str:
    """BokehJS inline, evaluated only where this BokehJS version is not loaded yet; then the
    graphs that wait for it are drawn."""
    source = Resources(mode="inline", components=["bokeh"]).js_raw[0]
    # "</script" would end the script element; in BokehJS it can only be inside a string.
    source = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
    return (
        f'if (!(window.Bokeh && window.Bokeh["{BOKEH_VERSION}"])) {{\n'
        f"(function () {{\n{source}\n}}).call(window);\n}}\n"
        f"(function () {{\n  var waiting = window.{_WAITING} || [];\n"
        f"  window.{_WAITING} = [];\n"
        "  waiting.forEach(function (draw) {\n"
        "    try { draw(); } catch (error) { console.error(error); }\n"
        "  });\n})();"
    )

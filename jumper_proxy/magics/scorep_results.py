"""Score-P's results in the notebook: the top regions under every instrumented cell
(:func:`show_summary`), ``%%display_scorep_profile [N] [DIR]`` (bar chart and call tree) and
``%%display_scorep_trace [N] [DIR]`` (the OTF2 timeline).

``N`` is the execution count of an instrumented cell (its region is ``cell [N]``); ``DIR`` an
experiment directory, relative to the kernel's working directory. Without either, the last
instrumented cell's experiment is shown. Files are read in a worker thread, so the proxy keeps
relaying while a large trace is read.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from jumper_proxy import kernelside
from jumper_proxy.api import Magic, MagicContext, MagicTable
from jumper_proxy.errors import MagicError


@dataclass
class Experiments:
    """The experiment directory of each instrumented cell, by execution count, in order."""

    by_count: dict[int, Path] = field(default_factory=dict)


async def show_summary(ctx: MagicContext, experiment: Path, regions: list[str]) -> None:
    """Remember the cell's experiment, and show its top regions by exclusive time, as a table
    with a text twin; a note instead when the experiment has no profile or it cannot be
    read."""
    from jumper_proxy import scorep_profile as sp

    if ctx.execution_count is not None:
        ctx.services.state(Experiments).by_count[ctx.execution_count] = experiment

    if not sp.profile_path(experiment).is_file():
        return  # profiling is off: nothing to summarize, and Score-P said nothing wrong
    try:
        profile = await asyncio.to_thread(sp.read_profile, experiment)
    except sp.ProfileError as exc:
        ctx.out.stream(f"Note: no profile summary: {exc}\n", "stderr")
        return
    nodes = sp.focus_nodes(profile, regions) if sp.cell_nodes(profile, regions) else []
    if not nodes:
        ctx.out.stream("Note: the profile holds no region of the cell.\n", "stderr")
        return
    rows = sp.top_regions(nodes, None)
    shown = rows[: sp.SUMMARY_ROWS]
    cells_time = sum(node.inclusive for node in nodes)
    more = len(rows) - len(shown)
    ctx.out.display(
        {
            "text/plain": sp.summary_text(shown, cells_time, more),
            "text/html": sp.summary_html(shown, cells_time, more),
        }
    )


async def experiment_of(ctx: MagicContext, magic: str, args: str) -> tuple[Path, str]:
    """The experiment directory ``args`` name (``[N] [DIR]``), and a title for it."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise MagicError(f"%%{magic}: {exc}") from None
    count: int | None = None
    if words and words[0].isdigit():
        count = int(words.pop(0))
    if len(words) > 1:
        raise MagicError(f"%%{magic} takes [N] [DIR]: an execution count and/or a directory")
    known = ctx.services.state(Experiments).by_count
    if words:
        cwd = (await ctx.run_hidden(*kernelside.working_directory()))["cwd"]
        path = Path(str(cwd)) / Path(words[0]).expanduser()
        return path, f"Score-P experiment {path.name}"
    if count is not None:
        if count not in known:
            ran = ", ".join(str(n) for n in known) or "none yet"
            raise MagicError(
                f"%%{magic}: cell [{count}] was not an instrumented cell with an experiment "
                f"(instrumented cells so far: {ran})."
            )
        return known[count], f"cell [{count}]"
    if not known:
        raise MagicError(
            f"%%{magic}: no instrumented cell has written a Score-P experiment yet: run one "
            "with %%execute_with_scorep, or name an experiment directory."
        )
    count, path = list(known.items())[-1]
    return path, f"cell [{count}]"


async def display_scorep_profile(ctx: MagicContext, args: str, body: str) -> None:
    from jumper_proxy import scorep_plots
    from jumper_proxy.scorep_profile import read_profile

    path, title = await experiment_of(ctx, "display_scorep_profile", args)
    profile = await asyncio.to_thread(read_profile, path)
    ctx.out.display(scorep_plots.profile_bundle(profile, title, ctx.cell_id))


async def display_scorep_trace(ctx: MagicContext, args: str, body: str) -> None:
    from jumper_proxy import scorep_plots
    from jumper_proxy.scorep_trace import read_trace

    path, title = await experiment_of(ctx, "display_scorep_trace", args)
    timeline = await asyncio.to_thread(read_trace, path)
    ctx.out.display(scorep_plots.trace_bundle(timeline, title, ctx.cell_id))


def register(table: MagicTable) -> None:
    table.add(
        Magic(
            "display_scorep_profile",
            display_scorep_profile,
            "Score-P profile of the last (or cell N's, or DIR's) experiment: time per region, "
            "call tree",
            "[N] [DIR]",
            needs_python=True,
        )
    )
    table.add(
        Magic(
            "display_scorep_trace",
            display_scorep_trace,
            "Score-P trace (OTF2) of the last (or cell N's, or DIR's) experiment as a timeline",
            "[N] [DIR]",
            needs_python=True,
        )
    )

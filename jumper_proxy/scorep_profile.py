"""Score-P's call-path profile (``profile.cubex``) as plain values: :func:`read_profile`.

The reader is pycubexr (imported on first use). A :class:`Node` per call path holds its
region's name, the inclusive and exclusive time (seconds, summed over all locations: threads
and ranks) and the visits. :func:`cell_nodes` finds the cells' regions (``__main__:cell [7]``,
or ``user:cell [7]`` without Python instrumentation), :func:`top_regions` ranks the regions
below them by exclusive time, :func:`focus_nodes` adds the threads the cells started, and
:func:`summary_text` / :func:`summary_html` show that under an instrumented cell.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumper_proxy.errors import MagicError

PROFILE_FILE = "profile.cubex"
#: how many regions the summary under a cell lists
SUMMARY_ROWS = 8


class ProfileError(MagicError):
    """A profile that is not there or cannot be read; the message says why."""

    ename = "ScorepProfileError"


@dataclass
class Node:
    """One call path: ``region`` called from its parent's call path."""

    region: str
    inclusive: float
    exclusive: float
    visits: int
    children: list[Node] = field(default_factory=list)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Node]]:
        """This node and every node below it, depth first, with their depth."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


@dataclass(frozen=True)
class Profile:
    """A whole profile: its call trees and how many locations it measured."""

    path: Path
    roots: list[Node]
    locations: int


@dataclass(frozen=True)
class RegionRow:
    """One region's totals below the cells: times in seconds, ``share`` of the cells' time."""

    region: str
    exclusive: float
    inclusive: float
    visits: int
    share: float


def profile_path(experiment: Path) -> Path:
    """The profile of an experiment directory (or the file itself)."""
    return experiment if experiment.suffix == ".cubex" else experiment / PROFILE_FILE


def read_profile(experiment: Path) -> Profile:
    """Read ``profile.cubex`` of ``experiment`` (a directory, or the file)."""
    path = profile_path(experiment)
    if not path.is_file():
        enabled = "" if experiment.is_dir() else f" ({experiment} does not exist)"
        raise ProfileError(
            f"No profile in {path.parent}{enabled}: Score-P writes profile.cubex when "
            "SCOREP_ENABLE_PROFILING is true (the default; set it with %%scorep_env)."
        )
    try:
        from pycubexr import CubexParser  # type: ignore[import-untyped]
    except ImportError:
        raise ProfileError(
            "Reading Score-P profiles needs pycubexr in jumper-proxy's environment "
            "(pip install pycubexr)."
        ) from None
    try:
        with CubexParser(str(path)) as cube:
            time = cube.get_metric_values(cube.get_metric_by_name("time"))
            visits = cube.get_metric_values(cube.get_metric_by_name("visits"))
            roots = [_node(cube, root, time, visits) for root in cube.get_root_cnodes()]
            locations = len(cube.get_locations())
    except Exception as exc:  # pycubexr raises whatever its parsers meet (tar, XML, KeyError)
        raise ProfileError(f"Cannot read {path}: {type(exc).__name__}: {exc}") from None
    return Profile(path, roots, locations)


def _node(cube: Any, cnode: Any, time: Any, visits: Any) -> Node:
    return Node(
        region=cube.get_region(cnode).name,
        inclusive=float(time.value(cnode, convert_to_inclusive=True)),
        exclusive=float(time.value(cnode, convert_to_exclusive=True)),
        visits=int(visits.value(cnode)),
        children=[_node(cube, child, time, visits) for child in cnode.get_children()],
    )


#: what an instrumented cell's region is called (without its module): ``cell`` or ``cell [7]``
CELL_REGION = re.compile(r"cell( \[\d+\])?")
#: where Score-P puts the call trees of threads (next to the code that started them)
THREADS = "THREADS"


def cell_nodes(profile: Profile, regions: Sequence[str] | None = None) -> list[Node]:
    """The call paths of the cells' regions (the outermost ones), in profile order; without
    ``regions``, of every region named like a cell (``cell [7]``)."""
    found: list[Node] = []

    def visit(node: Node) -> None:
        name = node.region.rpartition(":")[2]
        if name in regions if regions is not None else CELL_REGION.fullmatch(name):
            found.append(node)
            return
        for child in node.children:
            visit(child)

    for root in profile.roots:
        visit(root)
    return found


def focus_nodes(profile: Profile, regions: Sequence[str] | None = None) -> list[Node]:
    """What the user's cells measured: the cells' call paths and the threads' trees (threads
    started by the cells; the proxy's own code starts none), or the whole profile when it
    holds no cell (an experiment of some other program)."""
    cells = cell_nodes(profile, regions)
    if not cells:
        return list(profile.roots)
    threads = [
        node for root in profile.roots for node in (root, *root.children) if node.region == THREADS
    ]
    return cells + threads


def top_regions(nodes: Sequence[Node], limit: int | None = SUMMARY_ROWS) -> list[RegionRow]:
    """The regions in and below ``nodes``, summed over their call paths, by exclusive time.
    A region's inclusive time counts each call path once, not again inside itself."""
    total = sum(node.inclusive for node in nodes)
    sums: dict[str, list[float]] = {}
    for node in nodes:
        _add(node, sums, set())
    rows = [
        RegionRow(region, exclusive, inclusive, int(visits), exclusive / total if total else 0.0)
        for region, (exclusive, inclusive, visits) in sums.items()
    ]
    rows.sort(key=lambda row: (-row.exclusive, row.region))
    return rows[:limit] if limit is not None else rows


def _add(node: Node, sums: dict[str, list[float]], open_regions: set[str]) -> None:
    row = sums.setdefault(node.region, [0.0, 0.0, 0.0])
    row[0] += node.exclusive
    row[2] += node.visits
    recursive = node.region in open_regions
    if not recursive:
        row[1] += node.inclusive
        open_regions.add(node.region)
    for child in node.children:
        _add(child, sums, open_regions)
    if not recursive:
        open_regions.discard(node.region)


def summary_text(rows: Sequence[RegionRow], cells_time: float, more: int) -> str:
    """The top regions as a text table."""
    lines = [f"Top regions by exclusive time (the cell: {format_seconds(cells_time)})"]
    width = max((len(row.region) for row in rows), default=6)
    lines.append(f"  {'region':<{width}}  {'exclusive':>10}  {'share':>6}  {'visits':>9}")
    for row in rows:
        lines.append(
            f"  {row.region:<{width}}  {format_seconds(row.exclusive):>10}  "
            f"{row.share:>6.1%}  {row.visits:>9,}"
        )
    if more:
        lines.append(f"  ... and {more} more regions (%%display_scorep_profile shows them all)")
    return "\n".join(lines)


def summary_html(rows: Sequence[RegionRow], cells_time: float, more: int) -> str:
    """The top regions as an HTML table."""
    cells = "".join(
        "<tr>"
        f'<td style="text-align:left;font-family:monospace">{html.escape(row.region)}</td>'
        f"<td>{format_seconds(row.exclusive)}</td>"
        f"<td>{row.share:.1%}</td><td>{row.visits:,}</td></tr>"
        for row in rows
    )
    footer = (
        f'<tr><td colspan="4" style="text-align:left;color:#666">... and {more} more regions '
        "(%%display_scorep_profile shows them all)</td></tr>"
        if more
        else ""
    )
    return (
        '<table class="jumper-scorep-summary" style="font-size:small">'
        f'<caption style="text-align:left">Top regions by exclusive time '
        f"(the cell: {format_seconds(cells_time)})</caption>"
        '<thead><tr><th style="text-align:left">region</th><th>exclusive</th>'
        f"<th>share</th><th>visits</th></tr></thead><tbody>{cells}{footer}</tbody></table>"
    )


def format_seconds(value: float) -> str:
    """A duration as people read it: s, ms or µs."""
    if value >= 1:
        return f"{value:.3f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} µs"

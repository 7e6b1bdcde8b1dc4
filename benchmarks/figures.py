"""Figures from timings: medians against a base kernel, targets, and the text of a table.

Pure functions on lists of seconds (no kernels, no clock), shared by the start-up and the peer
benchmarks and unit-tested in ``tests/unit/test_bench_figures.py``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def compare(times: dict[str, list[float]], base: str = "plain") -> dict[str, dict[str, Any]]:
    """Per kernel: the median, the number of runs, and the median against ``base``'s as a ratio
    and as seconds added. Where a kernel and ``base`` were measured in the same rounds (lists of
    the same length, interleaved), ``paired_added_s`` is the median of the per-round differences,
    which drift between rounds does not move. A kernel without a single run gets ``None``s."""
    reference = statistics.median(times[base]) if times.get(base) else None
    rows: dict[str, dict[str, Any]] = {}
    for name, values in times.items():
        if not values:
            rows[name] = {"median_s": None, "runs": 0, "ratio_vs_plain": None, "added_s": None}
            continue
        value = statistics.median(values)
        row: dict[str, Any] = {
            "median_s": value,
            "runs": len(values),
            "min_s": min(values),
            "max_s": max(values),
            "ratio_vs_plain": value / reference if reference else None,
            "added_s": value - reference if reference is not None else None,
        }
        paired = times.get(base, [])
        if name != base and len(paired) == len(values):
            row["paired_added_s"] = statistics.median(
                v - p for v, p in zip(values, paired, strict=True)
            )
        rows[name] = row
    return rows


def within(row: dict[str, Any], added_at_most_s: float) -> bool | None:
    """Whether a kernel's median lies at most ``added_at_most_s`` above the base's; ``None``
    when it has no figure."""
    added = row.get("added_s")
    return None if added is None else bool(added <= added_at_most_s)


def seconds(value: float | None, signed: bool = False) -> str:
    """``12.34 ms`` below a tenth of a second, ``0.123 s`` / ``1.234 s`` above; ``-`` for none."""
    if value is None:
        return "-"
    sign = "+" if signed and value >= 0 else ""
    if abs(value) < 0.1:
        return f"{sign}{value * 1000:.2f} ms"
    return f"{sign}{value:.3f} s"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return "\n".join(line(r) for r in (header, *rows))

"""Reading and drawing Score-P's results: the pure parts (ranking regions, reducing a trace,
text and HTML twins) on values built here, and the readers on a profile and a trace that real
Score-P writes for this module (``real_scorep`` tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import scorep_bin

from jumper_proxy import scorep_plots, scorep_trace
from jumper_proxy.scorep_profile import (
    Node,
    Profile,
    ProfileError,
    cell_nodes,
    focus_nodes,
    read_profile,
    summary_html,
    summary_text,
    top_regions,
)
from jumper_proxy.scorep_trace import Timeline, TraceError, read_trace


def node(region: str, inclusive: float, exclusive: float, visits: int, *kids: Node) -> Node:
    return Node(region, inclusive, exclusive, visits, list(kids))


PROFILE = Profile(
    Path("/x/profile.cubex"),
    [
        node(
            "python3.11",
            1.0,
            0.6,
            1,
            node(
                "__main__:cell [3]",
                0.4,
                0.05,
                1,
                node("__main__:fib", 0.3, 0.2, 10, node("__main__:fib", 0.1, 0.1, 20)),
                node("__main__:io", 0.05, 0.05, 2),
            ),
            node("user:cell [4]", 0.0, 0.0, 1),
        )
    ],
    1,
)


def test_the_cells_regions_are_found_below_the_root() -> None:
    found = cell_nodes(PROFILE, ["cell [3]", "cell [4]"])
    assert [n.region for n in found] == ["__main__:cell [3]", "user:cell [4]"]
    assert cell_nodes(PROFILE, ["cell [9]"]) == []


def test_the_focus_is_the_cells_and_the_threads_they_started() -> None:
    threads = node("THREADS", 0.2, 0.0, 0, node("__main__:worker", 0.2, 0.2, 1))
    profile = Profile(
        PROFILE.path, [node("python3.11", 1.0, 0.4, 1, *PROFILE.roots[0].children, threads)], 2
    )
    focus = [n.region for n in focus_nodes(profile)]
    assert focus == ["__main__:cell [3]", "user:cell [4]", "THREADS"]
    assert [n.region for n in focus_nodes(profile, ["cell [4]"])] == ["user:cell [4]", "THREADS"]
    other = Profile(PROFILE.path, [node("main", 1.0, 1.0, 1)], 1)
    assert [n.region for n in focus_nodes(other)] == ["main"]  # not a notebook's experiment


def test_top_regions_sum_call_paths_and_count_recursion_once() -> None:
    rows = top_regions(cell_nodes(PROFILE, ["cell [3]"]))
    assert [r.region for r in rows] == ["__main__:fib", "__main__:cell [3]", "__main__:io"]
    fib = rows[0]
    assert fib.exclusive == pytest.approx(0.3) and fib.visits == 30
    assert fib.inclusive == pytest.approx(0.3)  # the recursive call is inside the outer one
    assert fib.share == pytest.approx(0.75)
    assert sum(r.share for r in rows) == pytest.approx(1.0)


def test_the_summary_has_a_text_and_an_html_twin() -> None:
    rows = top_regions(cell_nodes(PROFILE, ["cell [3]"]), 2)
    text = summary_text(rows, 0.4, 1)
    assert text.splitlines()[0] == "Top regions by exclusive time (the cell: 400.00 ms)"
    assert "  __main__:fib" in text and "75.0%" in text and "... and 1 more regions" in text
    page = summary_html(rows, 0.4, 1)
    assert page.count("<tr>") == 4 and "__main__:fib" in page and "75.0%" in page


def test_the_profile_bundle_draws_bars_and_the_call_tree() -> None:
    bundle = scorep_plots.profile_bundle(PROFILE, "cell [3]")
    assert "embed_item" in bundle["text/html"] and "jumper-scorep-calltree" in bundle["text/html"]
    lines = bundle["text/plain"].splitlines()
    tree = {line.strip().split()[0]: line for line in lines if "__main__:fib" in line}
    assert len([line for line in lines if "__main__:fib" in line]) == 2  # two call paths
    assert tree["__main__:fib"].split()[-1] in ("10", "20")


def timeline_of(bars: list[tuple[int, int, str, float, float]], locations: int = 1) -> Timeline:
    timeline = Timeline(Path("/x/traces.otf2"), [f"thread {i}" for i in range(locations)], 1.0)
    last: dict[tuple[int, int], int] = {}
    for row, depth, region, start, end in bars:
        timeline.calls += 1
        scorep_trace._add(timeline, last, 0.01, row, depth, region, start, end)
    return timeline


def test_short_neighbouring_calls_merge_into_one_bar_that_counts_them() -> None:
    tiny = [(0, 1, "a" if i % 2 else "b", i * 0.001, i * 0.001 + 0.0005) for i in range(10)]
    timeline = timeline_of([(0, 0, "outer", 0.0, 0.5), *tiny, (0, 1, "long", 0.2, 0.4)])
    assert len(timeline) == 3
    merged = timeline.region.index("b and 1 more regions")
    assert timeline.merged[merged] == 10 and timeline.end[merged] == pytest.approx(0.0095)
    assert timeline.region[timeline.merged.index(1)] == "outer"


def test_the_longest_bars_are_kept_and_the_text_says_so() -> None:
    timeline = timeline_of([(0, 0, f"r{i}", i * 0.1, i * 0.1 + 0.02 * (i + 1)) for i in range(5)])
    scorep_trace._keep_longest(timeline, 2)
    assert timeline.region == ["r3", "r4"]
    text = scorep_plots.trace_text(timeline, "cell [1]")
    assert "the 3 shortest bars were left out (2 kept)" in text


def test_the_trace_bundle_has_a_row_per_location() -> None:
    timeline = timeline_of([(0, 0, "main", 0.0, 1.0), (1, 0, "worker", 0.2, 0.7)], locations=2)
    timeline.flushes.append((1, 0.3, 0.35))
    bundle = scorep_plots.trace_bundle(timeline, "cell [2]")
    assert "embed_item" in bundle["text/html"] and "worker" in bundle["text/html"]
    assert "2 locations (thread 0, thread 1)" in bundle["text/plain"]
    assert "1 trace buffer flushes" in bundle["text/plain"]


def test_missing_files_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="SCOREP_ENABLE_PROFILING"):
        read_profile(tmp_path)
    with pytest.raises(TraceError, match="SCOREP_ENABLE_TRACING=1"):
        read_trace(tmp_path)
    (tmp_path / "profile.cubex").write_text("not a cube file")
    with pytest.raises(ProfileError, match="Cannot read"):
        read_profile(tmp_path)


PROGRAM = """\
import threading
def work(n):
    return sum(range(n))
def in_thread():
    for _ in range(3):
        work(1000)
t = threading.Thread(target=in_thread)
t.start()
for _ in range(5):
    work(10)
t.join()
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A profile and a trace written by real Score-P, with a second thread."""
    where = tmp_path_factory.mktemp("real-experiment")
    (where / "program.py").write_text(PROGRAM)
    env = {
        **os.environ,
        "PATH": f"{scorep_bin()}{os.pathsep}{os.environ['PATH']}",
        "SCOREP_ENABLE_TRACING": "true",
        "SCOREP_EXPERIMENT_DIRECTORY": str(where / "exp"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "scorep", "--thread=pthread", "program.py"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    yield where / "exp"


@pytest.mark.real_scorep
def test_a_real_profile_reads_back(experiment: Path) -> None:
    profile = read_profile(experiment)
    assert profile.locations >= 2
    regions = {n.region: n for root in profile.roots for _, n in root.walk()}
    assert regions["__main__:work"].visits in (5, 3)  # one call path per thread
    rows = {r.region: r for r in top_regions(profile.roots, None)}
    assert rows["__main__:work"].visits == 8


@pytest.mark.real_scorep
def test_a_real_trace_reads_back_with_a_row_per_thread(experiment: Path) -> None:
    timeline = read_trace(experiment)
    assert len(timeline.locations) >= 2
    # bars of work (alone, or the first of short calls merged into one bar) on both threads
    work = [i for i, region in enumerate(timeline.region) if region.startswith("__main__:work")]
    assert len({timeline.row[i] for i in work}) == 2
    assert timeline.calls >= 8 and sum(timeline.merged) == timeline.calls
    assert all(timeline.start[i] < timeline.end[i] <= timeline.duration for i in work)

"""Instrumented cells with real Score-P: how fast they start, beside plain ``python -m scorep``.

Figures (medians; the proxy's cells and the plain runs are interleaved, A B A B ...):

* an empty instrumented cell through the proxy, with the bindings' init library prepared (every
  instrumented cell after the kernel's first), and the kernel's first one (which prepares it);
* plain ``python -m scorep`` of an empty script: the bindings compile their init library with
  gcc at every start;
* the bindings' second stage alone: ``python -m scorep`` of the empty script started as the
  second stage, with the library prepared (the least any Score-P start costs);
* a cell touching a 1 GiB numpy array of the notebook (dill, shared memory): what it adds to
  the empty cell, and plain ``python -m scorep`` of a script that makes and touches the same
  array.

Targets: the empty cell at most 0.25 s, the 1 GiB cell at most 0.5 s more than the empty one.
Needs Score-P (``scorep-config`` on PATH or in /opt/scorep/bin) and the bindings installed in
this interpreter's environment (``make scorep``).

    python benchmarks/bench_scorep.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernels import execute, interleaved, kernel, machine, median, proxy_kernelspec

from jumper_proxy.child import InitCache
from jumper_proxy.child.faststart import split_binding_args
from jumper_proxy.child.launcher import probe_bindings

EMPTY = "%%execute_with_scorep\npass"
TOUCH = "%%execute_with_scorep\na[0] += 1"
ARRAY = "import numpy as np\na = np.ones(1024 * 1024 * 1024 // 8)"
TARGETS = {"empty_cell_s": 0.25, "gib_added_s": 0.5}


def scorep_path() -> str | None:
    """PATH with Score-P's bin directory first, or ``None`` without Score-P."""
    found = shutil.which("scorep-config") or shutil.which("scorep-config", path="/opt/scorep/bin")
    if found is None:
        return None
    return os.pathsep.join([str(Path(found).parent), os.environ.get("PATH", os.defpath)])


def plain_run(env: dict[str, str], cwd: Path, script: Path) -> Callable[[], float]:
    """Timing one ``python -m scorep SCRIPT`` in ``env``."""

    def once() -> float:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "scorep", str(script)],
            env=env,
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    return once


def second_stage_env(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """``env`` for a second stage of the bindings, from an init library prepared here."""
    cache = InitCache()

    async def prepare() -> dict[str, str] | None:
        found = await probe_bindings(sys.executable, env, cwd)
        args = split_binding_args([])
        return await cache.second_stage_env(found.key(), args, sys.executable, env, cwd)

    prepared = asyncio.run(prepare())
    if prepared is None:
        raise SystemExit(f"bench_scorep: cannot prepare the init library: {cache.failure}")
    return prepared


def bench(quick: bool) -> dict[str, Any]:
    """The figures above, as a dict."""
    path = scorep_path()
    if path is None:
        return {"skipped": "no Score-P installation (make scorep installs it from ../shared)"}
    runs = 5 if quick else 15
    results: dict[str, Any] = {"runs": runs}
    with tempfile.TemporaryDirectory(prefix="jumper-bench-scorep-") as where:
        work = Path(where)
        env = {**os.environ, "PATH": path}
        (work / "empty.py").write_text("")
        (work / "touch.py").write_text(ARRAY + "\na[0] += 1\n")
        plain_empty = plain_run(env, work, work / "empty.py")
        stage_two = plain_run(second_stage_env(env, work), work, work / "empty.py")

        with proxy_kernelspec(env={"PATH": path}) as name:
            firsts = []
            for _ in range(3 if quick else 5):
                with kernel(name, cwd=where) as proxy:
                    firsts.append(execute(proxy[1], EMPTY)[0])
            results["first_cell_s"] = median(firsts)
            with kernel(name, cwd=where) as proxy:
                kc = proxy[1]
                cell, plain = interleaved(runs, lambda: execute(kc, EMPTY)[0], plain_empty, 2)
                results["empty_cell_s"] = median(cell)
                results["plain_empty_s"] = median(plain)
                stage = [stage_two() for _ in range(runs)]
                results["second_stage_s"] = median(stage)
                execute(kc, ARRAY)
                plain_touch = plain_run(env, work, work / "touch.py")
                touch, plain = interleaved(
                    max(3, runs // 2), lambda: execute(kc, TOUCH)[0], plain_touch, 1
                )
                results["gib_cell_s"] = median(touch)
                results["gib_added_s"] = median(touch) - results["empty_cell_s"]
                results["plain_gib_s"] = median(plain)
    results["targets"] = TARGETS
    return results


def print_table(results: dict[str, Any]) -> None:
    if "skipped" in results:
        print(f"Score-P start-up: skipped, {results['skipped']}")
        return
    rows = [
        ("empty instrumented cell (init library prepared)", "empty_cell_s", "empty_cell_s"),
        ("the kernel's first instrumented cell (prepares it)", "first_cell_s", None),
        ("plain python -m scorep, empty script", "plain_empty_s", None),
        ("the bindings' second stage alone, library prepared", "second_stage_s", None),
        ("cell touching a 1 GiB array: added to the empty cell", "gib_added_s", "gib_added_s"),
        ("cell touching a 1 GiB array", "gib_cell_s", None),
        ("plain python -m scorep, making and touching 1 GiB", "plain_gib_s", None),
    ]
    print(f"Score-P start-up, real Score-P, medians of {results['runs']} runs")
    for label, key, target in rows:
        goal = f"  (target <= {results['targets'][target]:.2f} s)" if target else ""
        print(f"  {label:<55} {results[key]:.3f} s{goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    print(machine())
    print_table(bench(args.quick))


if __name__ == "__main__":
    main()

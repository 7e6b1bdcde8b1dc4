"""The peers' cells side by side, and what a new user meets, for ``make bench-peers``.

Cells, the kernels in turns (A B C D E A B ...) after a warm-up, each with a deadline (a kernel
that misses it is noted, restarted, and its set-up run again; one that misses it twice in a
series is left out of the rest of that series):

* ``pass`` (JUmPER only in every ``jumper_every``-th round: each of its cells takes a second);
* 20,000 printed lines;
* a pure-Python CPU-bound loop of about a second (calibrated on plain ipykernel, the same loop
  for all), where a sampler inside the kernel competes for the GIL;
* ``time.sleep(1)``.

Then, as a new user would: ``input()`` answered at the prompt, and a cell after it (without a
reply, an interrupt, as the stop button sends it, then another cell; still nothing, a
restart); ``clear_output`` and a display update (``update_display_data``). Finally the
reference row: plain ``python -m scorep`` of an empty script, when the real Score-P bindings
are importable here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_monitor import CPU_BOUND, calibrate
from bench_relay import PRINT_LINES
from figures import compare, ratio, seconds, table
from guarded import GuardedKernel, Wedged

SLEEP = "time.sleep(1)"
INPUT = "answer = input('your name? ')"
ECHO = "print(answer)"
TYPED = "jumper"
DISPLAYS = (
    "from IPython.display import clear_output, display\n"
    "print('to be cleared')\nclear_output()\n"
    "handle = display('before', display_id=True)\nhandle.update('after')"
)
#: a kernel that misses this many deadlines in one series is left out of the rest of it
MAX_WEDGES = 2
SCOREP_BIN = "/opt/scorep/bin"


def series(
    kernels: dict[str, GuardedKernel],
    code: str,
    runs: int,
    warmup: int,
    timeout: float,
    every: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``code`` on each kernel in turn; seconds per kernel, and the cells that failed."""
    times: dict[str, list[float]] = {label: [] for label in kernels}
    failed: dict[str, list[str]] = {label: [] for label in kernels}
    for index in range(warmup + runs):
        for label, k in kernels.items():
            if len(failed[label]) >= MAX_WEDGES or index % (every or {}).get(label, 1):
                continue
            try:
                elapsed, reply, _ = k.run(code, timeout)
            except Wedged as exc:  # it did not come back after a restart: out of this series
                failed[label] += [str(exc)] + [""] * (MAX_WEDGES - 1)
                continue
            if reply is None:
                failed[label].append(f"no reply within {timeout:g} s")
            elif reply["content"]["status"] != "ok":
                failed[label].append(f"{reply['content'].get('ename')}")
            elif index >= warmup:
                times[label].append(elapsed)
    problems = {label: [p for p in found if p] for label, found in failed.items()}
    return {"rows": compare(times), "failed": {k: v for k, v in problems.items() if v}}


def cell_benchmarks(
    kernels: dict[str, GuardedKernel], quick: bool, rounds: int, jumper_every: int
) -> dict[str, Any]:
    """The four cells above on every kernel."""
    plain = kernels["plain"]
    n = calibrate((plain.km, plain.client()), target_s=1.0)
    cpu_bound = CPU_BOUND.format(n=n)
    results: dict[str, Any] = {"cpu_bound_iterations": n}
    plan = [
        ("pass", "pass", rounds, 5, 60, {"jumper": jumper_every}),
        ("20,000 printed lines", PRINT_LINES, 3 if quick else 10, 1, 120, None),
        ("CPU-bound cell (~1 s)", cpu_bound, 3 if quick else 7, 1, 120, None),
        (SLEEP, SLEEP, 3 if quick else 5, 1, 60, None),
    ]
    for name, code, runs, warmup, timeout, every in plan:
        print(f"{name}: {runs} rounds ...", flush=True)
        results[name] = series(kernels, code, runs, warmup, timeout, every)
    return results


# --- what a new user meets ------------------------------------------------------------------


def input_check(k: GuardedKernel, timeout: float = 15) -> dict[str, Any]:
    """``input()`` answered, then a cell after it; an interrupt and a restart if need be."""
    prompts: list[str] = []

    def answer(request: dict[str, Any]) -> str:
        prompts.append(request["content"].get("prompt", ""))
        return TYPED

    _, reply, _ = k.run(INPUT, timeout, stdin=answer, recover=False)
    found: dict[str, Any] = {"input_request": bool(prompts), "input_cell": _status(reply)}
    _, reply, text = k.run(ECHO, timeout, recover=False)
    found["next_cell"] = _status(reply)
    found["next_cell_printed_the_answer"] = reply is not None and text.strip() == TYPED
    if reply is None:
        k.km.interrupt_kernel()
        _, reply, _ = k.run("pass", timeout, recover=False)
        found["after_interrupt"] = _status(reply)
        if reply is None:
            k.recover(f"{k.label}: no reply after input(), nor after an interrupt")
            found["restarted"] = True
    return found


def display_check(k: GuardedKernel, timeout: float = 30) -> dict[str, Any]:
    seen: list[str] = []
    _, reply, _ = k.run(DISPLAYS, timeout, seen=seen)
    return {
        "reply": _status(reply),
        "clear_output": "clear_output" in seen,
        "update_display_data": "update_display_data" in seen,
    }


def new_user_checks(kernels: dict[str, GuardedKernel]) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    for label, k in kernels.items():
        print(f"checking {label}: input(), clear_output, display updates ...", flush=True)
        try:
            checks[label] = {"input": input_check(k), "displays": display_check(k)}
        except Wedged as exc:
            checks[label] = {"failed": str(exc)}
    return checks


def _status(reply: dict[str, Any] | None) -> str | None:
    return None if reply is None else str(reply["content"]["status"])


# --- the Score-P reference row ---------------------------------------------------------------


def scorep_reference(runs: int, work: Path) -> dict[str, Any]:
    """Plain ``python -m scorep`` of an empty script with this interpreter: the least a Score-P
    run of Python costs here. Needs the bindings (``pip install scorep``) and Score-P."""
    if importlib.util.find_spec("scorep") is None:
        return {"skipped": "the scorep bindings are not installed in this environment"}
    path = os.pathsep.join((SCOREP_BIN, os.environ.get("PATH", os.defpath)))
    if shutil.which("scorep-config", path=path) is None:
        return {"skipped": "no Score-P installation (scorep-config not on PATH)"}
    cwd = work / "scorep-reference"
    cwd.mkdir()
    script = cwd / "empty.py"
    script.write_text("")
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "scorep", str(script)],
            cwd=cwd,
            env={**os.environ, "PATH": path},
            check=True,
            capture_output=True,
            timeout=120,
        )
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times[1:]), "runs": runs, "times": times[1:]}


# --- report -----------------------------------------------------------------------------------


def print_cells(results: dict[str, Any], labels: dict[str, str]) -> None:
    """Medians, then each kernel against plain ipykernel (ratio and time added)."""
    names = [n for n in labels if any(n in results[c]["rows"] for c in _cells(results))]
    medians, against = [], []
    for cell in _cells(results):
        rows = results[cell]["rows"]
        medians.append([cell, *(seconds(rows[n]["median_s"]) for n in names)])
        against.append(
            [cell]
            + [
                f"{ratio(rows[n]['ratio_vs_plain'])} ({seconds(rows[n]['added_s'], True)})"
                for n in names[1:]
            ]
        )
    print(table(["cell (median)", *(labels[n] for n in names)], medians))
    runs = ", ".join(
        f"{cell}: " + "/".join(str(results[cell]["rows"][n]["runs"]) for n in names)
        for cell in _cells(results)
    )
    print(f"(cells per kernel, in the order above: {runs})")
    print()
    print(table(["against plain: ratio (added)", *(labels[n] for n in names[1:])], against))
    for cell in _cells(results):
        for name, problems in results[cell]["failed"].items():
            print(f"{labels[name]}, {cell}: {'; '.join(problems)}")


def _cells(results: dict[str, Any]) -> list[str]:
    return [c for c, v in results.items() if isinstance(v, dict) and "rows" in v]


def print_checks(checks: dict[str, dict[str, Any]], labels: dict[str, str]) -> None:
    rows = []
    for name, found in checks.items():
        if "failed" in found:
            rows.append([labels[name], found["failed"], "", "", ""])
            continue
        given = found["input"]
        after = given["next_cell"] or (
            f"none; after an interrupt: {given.get('after_interrupt') or 'none, restarted'}"
        )
        rows.append(
            [
                labels[name],
                "yes" if given["input_request"] else "no",
                given["input_cell"] or "none",
                after,
                _yes(found["displays"]["clear_output"])
                + " / "
                + _yes(found["displays"]["update_display_data"]),
            ]
        )
    header = ["input()", "prompt shown", "its reply", "next cell's reply", "clear / update"]
    print(table(header, rows))


def _yes(value: bool) -> str:
    return "yes" if value else "lost"

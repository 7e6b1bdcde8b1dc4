"""Peer benchmark behind ``make bench-peers``: plain ipykernel, jumper-proxy, the original
JUmPER kernel (``jumper-kernel`` from PyPI), jumper-extension and jumper-wrapper-kernel side by
side in one run.

JUmPER is installed into its own virtual environment, ``benchmarks/.peers-venv``
(``jumper-kernel==1.1.1`` and cloudpickle at this environment's version, when missing), and its
kernelspec is installed by its own installer (``python -m jumper.install``) into a temporary
Jupyter data directory. It runs with ``PYTHONWARNINGS=ignore::FutureWarning``: without
it, the deprecation warning that ``pynvml`` prints lands in the output of JUmPER's monitor
process, JUmPER fails to decode it, and any cell long enough for the monitor to print (about
1 s) never gets a reply. The run checks that once and records it. The two other peers, their
environments and kernelspecs: ``peers_setup.py``.

Measured, the kernels in turns after a warm-up, every wait with a deadline (``guarded.py``: a
kernel that misses one is noted and restarted, and the run goes on):

1. ``pass``, 20,000 printed lines, a CPU-bound cell of about a second and ``time.sleep(1)`` on
   all five (``peers_cells.py``; JUmPER takes part in every ``--jumper-every``-th ``pass``
   round only: each of its cells takes about a second);
2. start to the first ``kernel_info_reply`` and to the first cell's reply, fresh kernels;
3. Score-P cells through the proxy and JUmPER with real Score-P (Score-P's ``bin`` first on
   their ``PATH``, the bindings built into both environments; without a Score-P installation,
   with the stand-in ``scorep`` of ``tests/fake_scorep`` on their ``PYTHONPATH`` and a
   placeholder ``scorep`` command, see below): the empty cell and a cell that changes a
   100 MiB / 1 GiB numpy array (``a[0] = a[0] + 1``, which both kernels hand in and back), for
   dill and cloudpickle in memory and disk mode; afterwards each kernel must hold the expected
   ``a[0]``. JUmPER refuses every Score-P magic unless a ``scorep`` executable (Score-P's own
   command) is on ``PATH``, which it only looks for and never runs (it runs
   ``python -m scorep``). The run shows that refusal, then puts a placeholder ``scorep`` on its
   ``PATH`` that fails loudly if anything runs it, and checks that nothing did. JUmPER appends
   the child's ``sys.path`` to the kernel's after every Score-P cell (and the child appends the
   kernel's to its own), so ``sys.path`` doubles per cell; the run records that growth and
   removes the duplicates before each series, else later cells measure it rather than the
   handover;
4. what a new user meets: ``input()``, the cell after it, ``clear_output`` and a display
   update; and plain ``python -m scorep`` of an empty script as a reference.

Prints tables of medians and ratios and writes ``benchmarks/results/peers.json`` (kernel
output in ``benchmarks/results/peers-logs``). About fifteen minutes; ``--quick`` about six.

    python benchmarks/bench_peers.py [--quick] [--rounds 200] [--jumper-every 4] [--sizes 100,1024]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_scorep import scorep_path
from bench_startup import measure_starts
from figures import table
from guarded import GuardedKernel
from jupyter_client.blocking.client import BlockingKernelClient
from kernels import (
    Kernel,
    kernel,
    machine,
    median,
    on_jupyter_path,
    proxy_kernelspec,
)
from peers_cells import (
    cell_benchmarks,
    new_user_checks,
    print_cells,
    print_checks,
    scorep_reference,
)
from peers_setup import EXTENSION_KERNEL, WRAPPER_KERNEL, PeerVenv, peer_kernelspecs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "peers.json"
LOGS = HERE / "results" / "peers-logs"
PEERS_VENV = HERE / ".peers-venv"
FAKE_SCOREP = ROOT / "tests" / "fake_scorep"
JUMPER_VERSION = "1.1.1"
JUMPER_KERNEL = "jumper"
JUMPER_WARNINGS = "ignore::FutureWarning"
#: cells run after every start: the wrapper's monitor is started by its user
SETUP = {"wrapper": ["%perfmonitor_start 0.5"]}
NAMES = ("plain", "proxy", "jumper", "extension", "wrapper")
LABELS = {
    "plain": "plain",
    "proxy": "proxy",
    "jumper": "JUmPER",
    "extension": "extension",
    "wrapper": "wrapper",
}
COMBOS = [(m, mode) for m in ("dill", "cloudpickle") for mode in ("memory", "disk")]
MIB = 1 << 20
SCOREP_EMPTY = "%%execute_with_scorep\npass"
SCOREP_TOUCH = "%%execute_with_scorep\na[0] = a[0] + 1"
PATH_LENGTH = "import sys\nprint(len(sys.path))"
# JUmPER doubles sys.path with every Score-P cell; reset it before each series so the series
# measures the handover (no assignment, so JUmPER does not hand ``sys`` over as a variable)
DEDUPE_PATH = "import sys\nsys.path.__init__(dict.fromkeys(sys.path))"
PLACEHOLDER = """#!/bin/sh
# Not Score-P: JUmPER only checks that a `scorep` command exists. Fail loudly if run.
touch "$(dirname "$0")/placeholder-was-run"
echo "bench_peers: placeholder scorep, not Score-P" >&2
exit 127
"""


# --- JUmPER's environment and kernelspec ------------------------------------------------------


JUMPER = PeerVenv(
    PEERS_VENV,
    (f"jumper-kernel=={JUMPER_VERSION}", f"cloudpickle=={metadata.version('cloudpickle')}"),
)


@contextlib.contextmanager
def jumper_kernelspec(work: Path) -> Iterator[dict[str, Any]]:
    """JUmPER's kernelspec, installed by ``python -m jumper.install`` (which installs for the
    user) with the user's Jupyter data directory pointed at ``work``; on ``JUPYTER_PATH`` for
    the run."""
    data_dir = work / "share" / "jupyter"
    subprocess.run(
        [str(JUMPER.python), "-m", "jumper.install"],
        check=True,
        capture_output=True,
        env={**os.environ, "JUPYTER_DATA_DIR": str(data_dir)},
    )
    spec = json.loads((data_dir / "kernels" / JUMPER_KERNEL / "kernel.json").read_text())
    with on_jupyter_path(str(data_dir)):
        yield spec


def placeholder_scorep(work: Path) -> Path:
    """A directory holding the placeholder ``scorep`` command."""
    bin_dir = work / "placeholder-bin"
    bin_dir.mkdir()
    command = bin_dir / "scorep"
    command.write_text(PLACEHOLDER)
    command.chmod(0o755)
    return bin_dir


def scorep_env(placeholder: Path | None = None) -> dict[str, str]:
    """What a kernel needs to run Score-P cells: real Score-P's ``bin`` first on ``PATH``, or
    (without Score-P) the stand-in on ``PYTHONPATH`` and the ``placeholder`` directory (JUmPER
    looks for a ``scorep`` command) first on ``PATH``."""
    real = scorep_path()
    if real is not None:
        return {"PATH": real}
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(FAKE_SCOREP), _pythonpath()) if p)}
    if placeholder is not None:
        env["PATH"] = os.pathsep.join((str(placeholder), os.environ.get("PATH", "")))
    return env


def jumper_env(warnings: bool = True, placeholder: Path | None = None) -> dict[str, str]:
    env = scorep_env(placeholder)
    if warnings:
        env["PYTHONWARNINGS"] = JUMPER_WARNINGS
    return env


def ensure_jumper() -> str:
    """JUmPER's environment (with the Score-P bindings built into it where Score-P is
    installed); the installed jumper-kernel version."""
    version = JUMPER.ensure()["jumper-kernel"]
    real = scorep_path()
    if real is not None and not JUMPER.installed("scorep"):
        print("building the Score-P bindings into JUmPER's environment ...", flush=True)
        pip = [str(JUMPER.python), "-m", "pip", "install", "--quiet", "scorep"]
        subprocess.run(pip, check=True, env={**os.environ, "PATH": real})
    return version


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


# --- kernels and cells --------------------------------------------------------------------------


@contextlib.contextmanager
def started(name: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[Kernel]:
    """A kernel of kernelspec ``name`` working in ``cwd`` (Score-P output, JUmPER's pipes), its
    output and log in ``results/peers-logs/<cwd name>.log``."""
    cwd.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{cwd.name}.log", "wb") as log, kernel(name, env, str(cwd), log) as k:
        yield k


def run_cell(
    kc: BlockingKernelClient, code: str, timeout: float = 600
) -> tuple[float, dict[str, Any] | None, str]:
    """Seconds until the reply and idle status arrived, the reply (``None`` when none came
    within ``timeout``) and the cell's stream text."""
    started_at = time.perf_counter()
    msg_id = kc.execute(code)
    reply: dict[str, Any] | None = None
    text: list[str] = []
    with contextlib.suppress(queue.Empty):
        while reply is None:
            msg = kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg
    # once there is a reply, the idle status follows; without one, take what came so far
    wait = timeout if reply is not None else 0.1
    with contextlib.suppress(queue.Empty):
        while True:
            msg = kc.get_iopub_msg(timeout=wait)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                text.append(msg["content"]["text"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    return time.perf_counter() - started_at, reply, "".join(text)


def ok(kc: BlockingKernelClient, code: str) -> tuple[float, str]:
    seconds, reply, text = run_cell(kc, code)
    if reply is None or reply["content"]["status"] != "ok":
        content = reply["content"] if reply else "no reply"
        raise RuntimeError(f"cell {code!r} failed: {content} {text}")
    return seconds, text


# --- JUmPER's quirks ----------------------------------------------------------------------------


def jumper_checks(cwd: Path) -> dict[str, Any]:
    """JUmPER without the warnings filter and without a ``scorep`` command on PATH (the
    bindings importable: installed, or the stand-in): what its Score-P cell and a 1 s cell
    do."""
    without = {"PYTHONPATH": os.pathsep.join(p for p in (str(FAKE_SCOREP), _pythonpath()) if p)}
    with started(JUMPER_KERNEL, cwd, without) as (_km, kc):
        seconds, reply, text = run_cell(kc, SCOREP_EMPTY, timeout=30)
        scorep = {
            "reply": reply["content"]["status"] if reply else None,
            "seconds": seconds,
            "output": text.strip(),
        }
        seconds, reply, text = run_cell(kc, "import time; time.sleep(1)", timeout=10)
        sleep = {
            "reply": reply["content"]["status"] if reply else None,
            "waited_s": seconds,
            "output": text.strip(),
        }
    log = (LOGS / f"{cwd.name}.log").read_text(errors="replace").splitlines()
    sleep["kernel_error"] = next((line for line in reversed(log) if "Error" in line), None)
    return {
        "scorep_cell_without_scorep_command": scorep,
        "sleep_1s_cell_without_PYTHONWARNINGS": sleep,
    }


# --- item 4: Score-P cells ----------------------------------------------------------------------


class ScorepFailed(Exception):
    pass


def scorep_cell(kc: BlockingKernelClient, code: str, name: str) -> float:
    seconds, reply, text = run_cell(kc, code)
    refused = ("not available", "KernelError", "KernelWarning", "Traceback")
    if reply is None or reply["content"]["status"] != "ok" or any(r in text for r in refused):
        content = reply["content"].get("evalue", reply["content"]["status"]) if reply else None
        raise ScorepFailed(f"{LABELS[name]}: {code!r} gave {content!r}: {text.strip()!r}")
    return seconds


def scorep_benchmarks(
    kernels: dict[str, Kernel], sizes: list[int], runs: int, counts: dict[str, int]
) -> list[dict[str, Any]]:
    """Rows per cell kind, array size, marshaller and mode: median seconds per kernel, interleaved
    (proxy, JUmPER, ...) after one warm-up cell. Counts the Score-P cells run per kernel."""
    rows: list[dict[str, Any]] = []

    def measure(code: str) -> dict[str, float]:
        for _km, kc in kernels.values():
            ok(kc, DEDUPE_PATH)
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for index in range(runs + 1):
            for name, (_km, kc) in kernels.items():
                seconds = scorep_cell(kc, code, name)
                counts[name] += 1
                if index:
                    times[name].append(seconds)
        return {name: median(values) for name, values in times.items()}

    def settings(marshaller: str, mode: str) -> None:
        for name, (_km, kc) in kernels.items():
            _, text = ok(kc, f"%%marshalling_settings\nMARSHALLER={marshaller}\nMODE={mode}")
            if name == "jumper" and f"'{marshaller}' marshaller in '{mode}'" not in text:
                raise ScorepFailed(f"JUmPER did not take {marshaller}/{mode}: {text.strip()!r}")

    empty: dict[tuple[str, str], dict[str, float]] = {}
    for marshaller, mode in COMBOS:
        settings(marshaller, mode)
        empty[marshaller, mode] = measure(SCOREP_EMPTY)
        rows.append(_row("empty cell", None, marshaller, mode, empty[marshaller, mode], None))
    for size in sizes:
        for _km, kc in kernels.values():
            ok(kc, f"import numpy as np\na = np.ones({size // 8})")
        for marshaller, mode in COMBOS:
            settings(marshaller, mode)
            medians = measure(SCOREP_TOUCH)
            rows.append(
                _row("a[0] = a[0] + 1", size, marshaller, mode, medians, empty[marshaller, mode])
            )
        expected = 1 + len(COMBOS) * (runs + 1)
        for name, (_km, kc) in kernels.items():
            _, reply, text = run_cell(kc, f"assert a[0] == {expected}, a[0]\ndel a")
            if reply is None or reply["content"]["status"] != "ok":
                got = reply["content"].get("evalue") if reply else None
                raise ScorepFailed(
                    f"{LABELS[name]} did not bring the array back: a[0] is {got}, "
                    f"expected {expected}"
                )
    return rows


def sys_path_growth(
    kernels: dict[str, Kernel], cells: int, counts: dict[str, int]
) -> dict[str, list[int]]:
    """``len(sys.path)`` in each kernel before and after each of ``cells`` empty Score-P cells
    (then reset)."""
    growth: dict[str, list[int]] = {}
    for name, (_km, kc) in kernels.items():
        lengths = [int(ok(kc, PATH_LENGTH)[1])]
        for _ in range(cells):
            scorep_cell(kc, SCOREP_EMPTY, name)
            counts[name] += 1
            lengths.append(int(ok(kc, PATH_LENGTH)[1]))
        ok(kc, DEDUPE_PATH)
        growth[name] = lengths
    return growth


def _row(
    cell: str,
    size: int | None,
    marshaller: str,
    mode: str,
    medians: dict[str, float],
    empty: dict[str, float] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell": cell,
        "array_mib": size // MIB if size else None,
        "marshaller": marshaller,
        "mode": mode,
    }
    for name, seconds in medians.items():
        row[f"{name}_s"] = seconds
        if empty is not None:
            row[f"{name}_added_s"] = seconds - empty[name]
    if "jumper_s" in row:
        row["jumper_vs_proxy"] = row["jumper_s"] / row["proxy_s"]
    return row


def experiment_dirs(cwd: Path) -> int:
    """Experiment directories Score-P (or the stand-in) wrote, one per Score-P cell it ran."""
    return sum(
        1
        for d in cwd.glob("scorep-*")
        if (d / "profile.cubex").exists() or (d / "fake_scorep.json").exists()
    )


# --- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cells, 100 MiB array only")
    parser.add_argument("--rounds", type=int, help="pass rounds (default 200, quick 40)")
    parser.add_argument("--jumper-every", type=int, default=4, help="JUmPER's pass rounds")
    parser.add_argument("--sizes", help="array sizes in MiB (default 100,1024, quick 100)")
    parser.add_argument("--skip-checks", action="store_true", help="skip JUmPER's quirk checks")
    args = parser.parse_args()
    rounds = args.rounds or (40 if args.quick else 200)
    sizes_mib = args.sizes or ("100" if args.quick else "100,1024")
    sizes = [int(s) * MIB for s in sizes_mib.split(",") if s]
    scorep_runs = 1 if args.quick else 3

    # on SIGTERM too, leave through the context managers that shut the kernels down
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    version = ensure_jumper()
    started_at = time.perf_counter()
    real = scorep_path() is not None
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "real_scorep": real,
        "jumper": {
            "package": f"jumper-kernel=={version}",
            "venv": str(PEERS_VENV.relative_to(ROOT)),
            "env": {"PYTHONWARNINGS": JUMPER_WARNINGS, "PATH": "Score-P's bin first"}
            if real
            else {
                "PYTHONWARNINGS": JUMPER_WARNINGS,
                "PYTHONPATH": "tests/fake_scorep",
                "PATH": "a placeholder scorep command first (checked: never run)",
            },
        },
    }
    with (
        tempfile.TemporaryDirectory(prefix="jumper-peers-") as tmp,
        proxy_kernelspec(env=scorep_env()) as proxy_name,
        jumper_kernelspec(Path(tmp)) as spec,
        peer_kernelspecs(Path(tmp)) as peers,
    ):
        work = Path(tmp)
        results["jumper"]["kernelspec_argv"] = spec["argv"]
        results["peers"] = peers
        if not args.skip_checks:
            print("checking JUmPER without a scorep command and without the filter ...")
            results["jumper"]["checks"] = jumper_checks(work / "check")
        placeholder = placeholder_scorep(work)
        specs = {
            "plain": ("python3", None),
            "proxy": (proxy_name, None),
            "jumper": (JUMPER_KERNEL, jumper_env(True, placeholder)),
            "extension": (EXTENSION_KERNEL, None),
            "wrapper": (WRAPPER_KERNEL, None),
        }
        with contextlib.ExitStack() as stack:
            kernels = {
                label: stack.enter_context(guarded(label, name, work / label, env))
                for label, (name, env) in specs.items()
            }
            results["cells"] = cell_benchmarks(kernels, args.quick, rounds, args.jumper_every)
            kind = "real Score-P" if real else "stand-in scorep"
            print(f"Score-P cells ({kind}) ...", flush=True)
            scorep_kernels = {n: (kernels[n].km, kernels[n].client()) for n in ("proxy", "jumper")}
            results["scorep"] = run_scorep(scorep_kernels, sizes, scorep_runs, work)
            results["checks"] = new_user_checks(kernels)
            results["restarts"] = {label: k.notes for label, k in kernels.items() if k.notes}
            results["first_cell_output"] = {
                label: k.first_output for label, k in kernels.items() if k.first_output.strip()
            }
        results["scorep"]["placeholder_scorep_was_run"] = (
            placeholder / "placeholder-was-run"
        ).exists()
        print("start-up ...", flush=True)
        with open(LOGS / "startup.log", "wb") as log:
            launch = {
                label: {"env": {**os.environ, **(env or {})}, "cwd": str(work / label)}
                | {"stdout": log, "stderr": log}
                for label, (_name, env) in specs.items()
            }
            names = {label: name for label, (name, _env) in specs.items()}
            results["startup"] = measure_starts(names, 2 if args.quick else 5, 120, launch)
        results["scorep_reference"] = scorep_reference(3 if args.quick else 7, work)
    results["seconds"] = time.perf_counter() - started_at
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print_report(results)
    print(f"\nwritten to {RESULTS}")


@contextlib.contextmanager
def guarded(
    label: str, name: str, cwd: Path, env: dict[str, str] | None
) -> Iterator[GuardedKernel]:
    """A started kernel that the run survives, working in ``cwd``, its output in
    ``results/peers-logs/<label>.log``; ``import time`` after every start."""
    cwd.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{label}.log", "wb") as log:
        k = GuardedKernel(LABELS[label], name, env=env, cwd=str(cwd), log=log)
        k.setup += ["import time", *SETUP.get(label, [])]
        try:
            k.start()
            yield k
        finally:
            k.close()


def run_scorep(
    kernels: dict[str, Kernel], sizes: list[int], runs: int, work: Path
) -> dict[str, Any]:
    """Score-P rows for the proxy and JUmPER; the proxy alone when JUmPER's path fails."""
    growth: dict[str, list[int]] = {}
    counts = dict.fromkeys(kernels, 0)
    try:
        growth = sys_path_growth(kernels, 4, counts)
        rows = scorep_benchmarks(kernels, sizes, runs, counts)
        failure = None
    except ScorepFailed as exc:
        failure = str(exc)
        print(f"JUmPER's Score-P path failed: {failure}; measuring the proxy alone", flush=True)
        proxy = {"proxy": kernels["proxy"]}
        growth = sys_path_growth(proxy, 4, counts)
        rows = scorep_benchmarks(proxy, sizes, runs, counts)
    return {
        "runs": runs,
        "sys_path_length_after_each_empty_cell": growth,
        "rows": rows,
        "jumper_failure": failure,
        "cells_run": counts,
        "experiment_dirs": {name: experiment_dirs(work / name) for name in kernels},
    }


# --- report -------------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    machine, jumper = results["machine"], results["jumper"]
    print(
        f"\npeer benchmark, {results['when']}, {machine['cpus']} CPUs, Python {machine['python']}"
        f"; {jumper['package']} with PYTHONWARNINGS={JUMPER_WARNINGS}"
    )
    peers = results["peers"]
    print(
        f"{peers[EXTENSION_KERNEL]['installed']}, {peers[WRAPPER_KERNEL]['installed']}"
        " (each in its own venv; extension: monitor started at 2 Hz in the kernelspec;"
        " wrapper: `%perfmonitor_start 0.5` as its first cell)\n"
    )
    print_cells(results["cells"], LABELS)
    print(f"(CPU-bound: {results['cells']['cpu_bound_iterations']:,} iterations, on all kernels)")
    checks = jumper.get("checks")
    if checks:
        sleep = checks["sleep_1s_cell_without_PYTHONWARNINGS"]
        got = f"reply {sleep['reply']}" if sleep["reply"] else "no reply"
        print(
            f"\nJUmPER without PYTHONWARNINGS: a 1 s cell got {got} after {sleep['waited_s']:.0f} s"
            f" (kernel log: {sleep['kernel_error']})"
        )
        refused = checks["scorep_cell_without_scorep_command"]
        print(f"JUmPER's Score-P cell without a scorep command: {refused['output']!r}")
    scorep = results["scorep"]
    has_jumper = not scorep["jumper_failure"]
    if has_jumper and results.get("real_scorep"):
        print(
            "\nThe Score-P cells ran real Score-P; experiment directories written: "
            f"{scorep['experiment_dirs']}, Score-P cells run: {scorep['cells_run']}"
        )
    elif has_jumper:
        print(
            "\nJUmPER's Score-P cells ran with the stand-in scorep and a placeholder scorep command"
            f" (run by anything: {scorep['placeholder_scorep_was_run']}); experiment directories"
            f" written: {scorep['experiment_dirs']}, Score-P cells run: {scorep['cells_run']}"
        )
    else:
        print(f"\nJUmPER's Score-P cells could not be measured: {scorep['jumper_failure']}")
    for name, lengths in scorep["sys_path_length_after_each_empty_cell"].items():
        print(f"len(sys.path) in {LABELS[name]}, then after each empty Score-P cell: {lengths}")
    width = 46
    header = f"\n{'Score-P cell (median of ' + str(scorep['runs']) + ')':<{width}}{'proxy':>9}"
    if has_jumper:
        header += f"{'JUmPER':>9}{'JUmPER/proxy':>14}{'proxy +':>10}{'JUmPER +':>10}"
    else:
        header += f"{'proxy +':>10}"
    print(header)
    for row in scorep["rows"]:
        size = f"{row['array_mib']} MiB " if row["array_mib"] else ""
        label = f"{size}{row['cell']}, {row['marshaller']}/{row['mode']}"
        line = f"{label:<{width}}{_t(row['proxy_s']):>9}"
        added = "proxy_added_s" in row
        if has_jumper:
            line += f"{_t(row['jumper_s']):>9}{row['jumper_vs_proxy']:>14.2f}"
            if added:
                line += f"{_t(row['proxy_added_s']):>10}{_t(row['jumper_added_s']):>10}"
        elif added:
            line += f"{_t(row['proxy_added_s']):>10}"
        print(line)
    print("('+' = the cell minus the empty cell of the same marshaller and mode)")
    print("\nstart-up (fresh kernels, in turns)")
    rows = results["startup"]["rows"]
    labels = [n for n in NAMES if n in rows["kernel_info_reply"]]
    lines = [
        [f"start to {m}", *(f"{_t(rows[m][n]['median_s'])} ({_ratio(rows[m][n])})" for n in labels)]
        for m in rows
    ]
    print(table(["median (ratio vs plain)", *(LABELS[n] for n in labels)], lines))
    for problem in results["startup"]["failures"] + results["startup"]["left_behind"]:
        print(f"start-up: {problem}")
    reference = results["scorep_reference"]
    if "skipped" in reference:
        print(f"\npython -m scorep of an empty script: skipped, {reference['skipped']}")
    else:
        runs = f"median of {reference['runs']}"
        print(f"\npython -m scorep of an empty script: {_t(reference['median_s'])} ({runs})")
    print("\nas a new user: input() answered at its prompt, then a cell after it")
    print_checks(results["checks"], LABELS)
    for notes in results["restarts"].values():
        print("; ".join(notes))
    for label, text in results["first_cell_output"].items():
        print(f"{LABELS[label]}'s first cell printed: {text.strip()[:160]!r}")
    ext = results["peers"][EXTENSION_KERNEL]
    if not ext["declares_ipykernel"]:
        print("jumper-extension does not depend on ipykernel: installed beside it for its kernel")
    print(f"\nrun took {results['seconds']:.0f} s; kernel logs in {LOGS}")


def _ratio(row: dict[str, Any]) -> str:
    return "-" if row["ratio_vs_plain"] is None else f"{row['ratio_vs_plain']:.2f}"


def _t(seconds: float, signed: bool = False) -> str:
    sign = "+" if signed and seconds >= 0 else ""
    if abs(seconds) < 1:
        return f"{sign}{seconds * 1000:.2f} ms" if abs(seconds) < 0.1 else f"{sign}{seconds:.3f} s"
    return f"{sign}{seconds:.3f} s"


if __name__ == "__main__":
    main()

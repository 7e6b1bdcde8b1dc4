"""Start-up and restart: how long until a kernel answers, plain ipykernel against its relays.

Measured as a frontend sees it, with jupyter_client:

* **start**: from calling ``KernelManager.start_kernel()`` to the first ``kernel_info_reply``,
  and to the reply of a first cell (``pass``) sent as soon as that came;
* **restart**: from calling ``KernelManager.restart_kernel()`` (what a frontend's restart is:
  a shutdown request, the process's exit, a new process) on a kernel that was up, to the next
  ``kernel_info_reply`` and first cell likewise; and to the call's return (the old kernel gone
  and the new process started), the part of a restart that is shutting down.

The kernels take turns (A B C A B C ...), one warm-up round first. The client's sockets are
made right after the call, on a context that retries a connection every 10 ms (jupyter_client's
default is 100 ms, which would round every figure up to the next tenth of a second alike). Every
wait has a deadline: a kernel that misses it is recorded as failed for that round and replaced.
Targets: the proxy at most 0.15 s behind plain ipykernel, both for start and restart.

    python benchmarks/bench_startup.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq
from figures import compare, ratio, seconds, table, within
from guarded import describe, kernel_tree, kill_all, reply_to, survivors, wait_for
from jupyter_client.manager import KernelManager
from kernels import machine, proxy_kernelspec
from min_relay import min_relay_kernelspec

#: the proxy may start this much later than plain ipykernel, and restart likewise
TARGET_ADDED_S = 0.15
LOG = Path(__file__).resolve().parent / "results" / "startup-kernels.log"
RECONNECT_MS = 10
MILESTONES = ("kernel_info_reply", "first cell's reply")
#: a restart's first part: the old kernel shut down (and the new one's process started)
RETURNED = "restart_kernel() returned"


@contextlib.contextmanager
def client_context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def first_replies(
    km: KernelManager, ctx: zmq.Context[Any], started: float, deadline: float
) -> list[float]:
    """Seconds since ``started`` until the first ``kernel_info_reply`` and the reply to a
    ``pass`` sent right after it; fewer figures when the kernel missed ``deadline``."""
    kc = km.client(context=ctx)
    kc.start_channels(hb=False)
    try:
        figures: list[float] = []
        sends: list[Callable[[], str]] = [kc.kernel_info, lambda: kc.execute("pass")]
        for send in sends:
            if wait_for(kc.get_shell_msg, reply_to(send()), deadline, km.is_alive) is None:
                break
            figures.append(time.perf_counter() - started)
        return figures
    finally:
        kc.stop_channels()


def stop(km: KernelManager) -> list[str]:
    """Shut a kernel down as a frontend does; what it left running (killed now)."""
    tree = kernel_tree(int(km.provisioner.process.pid)) if km.has_kernel else []  # type: ignore[union-attr]
    if km.has_kernel:
        km.shutdown_kernel()
    left = survivors(tree)
    names = describe(left)
    kill_all(left)
    return names


class Runs:
    """Figures per kernel and milestone, and what went wrong in which round."""

    def __init__(self, labels: list[str]) -> None:
        self.times: dict[str, dict[str, list[float]]] = {
            m: {label: [] for label in labels} for m in MILESTONES
        }
        self.failures: list[str] = []

    def add(self, label: str, round_: int, figures: list[float], timeout: float) -> None:
        for milestone, value in zip(MILESTONES, figures, strict=False):
            self.times[milestone][label].append(value)
        if len(figures) < len(MILESTONES):
            missed = MILESTONES[len(figures)]
            self.failures.append(f"round {round_}: {label} gave no {missed} within {timeout:g} s")

    def result(self) -> dict[str, Any]:
        rows = {m: compare(self.times[m]) for m in MILESTONES}
        return {"rows": rows, "times": self.times, "failures": self.failures}


def measure_starts(
    kernels: dict[str, str],
    rounds: int,
    timeout: float,
    launch: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``rounds`` fresh starts of each kernelspec (label: name), in turns, after one warm-up;
    ``launch`` holds ``start_kernel``'s arguments per label (``env``, ``cwd``, output)."""
    runs = Runs(list(kernels))
    left_behind: list[str] = []
    with client_context() as ctx:
        for index in range(rounds + 1):
            for label, name in kernels.items():
                km = KernelManager(kernel_name=name)
                started = time.perf_counter()
                try:
                    km.start_kernel(**(launch or {}).get(label, {}))
                    figures = first_replies(km, ctx, started, time.monotonic() + timeout)
                finally:
                    left_behind += [f"{label}: {p}" for p in stop(km)]
                if index:
                    runs.add(label, index, figures, timeout)
    return {**runs.result(), "left_behind": left_behind}


def measure_restarts(
    kernels: dict[str, str],
    rounds: int,
    timeout: float,
    launch: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``rounds`` restarts of each kernel, in turns, after one warm-up; a kernel that failed a
    round is started afresh (untimed) before the next."""
    runs = Runs(list(kernels))
    returned: dict[str, list[float]] = {label: [] for label in kernels}
    left_behind: list[str] = []
    managers = {label: KernelManager(kernel_name=name) for label, name in kernels.items()}
    with client_context() as ctx:
        try:
            for label, km in managers.items():
                km.start_kernel(**(launch or {}).get(label, {}))
                first_replies(km, ctx, time.perf_counter(), time.monotonic() + timeout)
            for index in range(rounds + 1):
                for label, km in managers.items():
                    old = kernel_tree(int(km.provisioner.process.pid))  # type: ignore[union-attr]
                    started = time.perf_counter()
                    km.restart_kernel()
                    if index:
                        returned[label].append(time.perf_counter() - started)
                    figures = first_replies(km, ctx, started, time.monotonic() + timeout)
                    left = survivors(old)
                    left_behind += [f"{label}: {p}" for p in describe(left)]
                    kill_all(left)
                    if index:
                        runs.add(label, index, figures, timeout)
                    if len(figures) < len(MILESTONES):
                        left_behind += [f"{label}: {p}" for p in stop(km)]
                        km = managers[label] = KernelManager(kernel_name=kernels[label])
                        km.start_kernel(**(launch or {}).get(label, {}))
        finally:
            for label, km in managers.items():
                left_behind += [f"{label}: {p}" for p in stop(km)]
    result = runs.result()
    result["rows"] = {RETURNED: compare(returned), **result["rows"]}
    return {**result, "left_behind": left_behind}


def startup_benchmarks(quick: bool = False) -> dict[str, Any]:
    """Start and restart of plain ipykernel, the floor relay and the proxy."""
    rounds = 3 if quick else 10
    LOG.parent.mkdir(exist_ok=True)
    with (
        proxy_kernelspec() as proxy,
        min_relay_kernelspec() as floor,
        open(LOG, "wb") as log,
    ):
        kernels = {"plain": "python3", "floor": floor, "proxy": proxy}
        launch = {label: {"stdout": log, "stderr": log} for label in kernels}
        return {
            "start": measure_starts(kernels, rounds, 60, launch),
            "restart": measure_restarts(kernels, rounds, 60, launch),
            "target_added_s": TARGET_ADDED_S,
        }


def print_startup(results: dict[str, Any]) -> None:
    labels = list(results["start"]["rows"][MILESTONES[0]])
    others = [label for label in labels if label != "plain"]
    header = ["start-up (median)", *labels]
    for label in others:
        header += [f"{label} - plain", f"{label}/plain"]
    header.append(f"proxy <= plain + {results['target_added_s']:g} s")
    lines = []
    for kind in ("start", "restart"):
        for milestone, rows in results[kind]["rows"].items():
            cells = [
                f"{kind}: {milestone}" if milestone == RETURNED else f"{kind} to {milestone}",
                *(seconds(rows[label]["median_s"]) for label in labels),
            ]
            for label in others:
                cells += [
                    seconds(rows[label]["added_s"], True),
                    ratio(rows[label]["ratio_vs_plain"]),
                ]
            met = within(rows["proxy"], results["target_added_s"]) if "proxy" in rows else None
            if milestone == RETURNED:
                met = None  # a part of the restart, not a target
            cells.append({True: "yes", False: "NO", None: "-"}[met])
            lines.append(cells)
    print(table(header, lines))
    runs = {
        kind: results[kind]["rows"][MILESTONES[0]]["plain"]["runs"] for kind in ("start", "restart")
    }
    print(
        f"(medians of {runs['start']} starts and {runs['restart']} restarts per kernel, in turns)"
    )
    for kind in ("start", "restart"):
        for problem in results[kind]["failures"] + results[kind]["left_behind"]:
            print(f"{kind}: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three rounds instead of ten")
    args = parser.parse_args()
    print(machine())
    print_startup(startup_benchmarks(args.quick))


if __name__ == "__main__":
    main()

"""Monitoring cost: a CPU-bound cell's wall time through the proxy vs plain ipykernel, and the
CPU time the proxy process spends while a cell runs, at 2 and 20 samples per second.

Two Python processes run the same loop a few percent apart (memory layout differs from one
process to the next), so the plain kernel and the proxy's upstream differ by that much before
the proxy does anything. Besides the raw ratio, each cell's *lost time* is measured: its wall
time minus the CPU time its kernel spent on it, the part the proxy could add to. The
``ratio_same_work`` is the plain kernel's wall time plus the proxy's extra lost time, over the
plain kernel's wall time.

Run: ``python benchmarks/bench_monitor.py``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
from kernels import Kernel, execute, interleaved, median, standalone

CPU_BOUND = "s = 0\nfor i in range({n}):\n    s += i * i"
SLEEP = "import time\ntime.sleep({seconds})"


def calibrate(plain: Kernel, target_s: float = 2.0) -> int:
    """Loop iterations that take about ``target_s`` in the plain kernel."""
    n = 1_000_000
    seconds, _ = execute(plain[1], CPU_BOUND.format(n=n))
    return int(n * target_s / seconds)


class CpuClock:
    """CPU seconds a process has used, to the nanosecond where Linux tells.

    ``/proc/PID/stat`` counts in clock ticks (10 ms), too coarse for a cell of a few seconds;
    each thread's ``schedstat`` counts nanoseconds. A thread that ends between two readings
    takes its time with it, so then the tick count is used instead (and :attr:`coarse` set).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.coarse = False

    def read(self) -> tuple[float, dict[str, int]]:
        times = psutil.Process(self.pid).cpu_times()
        threads: dict[str, int] = {}
        task = f"/proc/{self.pid}/task"
        try:
            for tid in os.listdir(task):
                with open(f"{task}/{tid}/schedstat") as f:
                    threads[tid] = int(f.read().split()[0])
        except OSError:
            threads = {}
        return float(times.user + times.system), threads

    def between(
        self, before: tuple[float, dict[str, int]], after: tuple[float, dict[str, int]]
    ) -> float:
        if before[1] and before[1].keys() <= after[1].keys():
            return sum(after[1][tid] - before[1].get(tid, 0) for tid in after[1]) / 1e9
        self.coarse = True
        return after[0] - before[0]


def set_frequency(proxy: Kernel, hz: float) -> None:
    _, reply = execute(proxy[1], f"%env JUMPER_REPORT_FREQUENCY={hz}")
    assert reply["content"]["status"] == "ok"
    execute(proxy[1], "pass")  # the proxy re-reads its settings before this cell runs


def proxy_pid(proxy: Kernel) -> int:
    return int(proxy[0].provisioner.process.pid)


def kernel_pid(k: Kernel) -> int:
    """The ipykernel process: the kernel itself, or the proxy's upstream."""
    process = psutil.Process(proxy_pid(k))
    children = process.children()
    return children[0].pid if children else process.pid


def cpu_bound(plain: Kernel, proxy: Kernel, hz: float, n: int, runs: int) -> dict[str, Any]:
    set_frequency(proxy, hz)
    code = CPU_BOUND.format(n=n)
    clocks = {
        "proxy": CpuClock(proxy_pid(proxy)),
        "plain kernel": CpuClock(kernel_pid(plain)),
        "upstream": CpuClock(kernel_pid(proxy)),
    }
    spent: dict[str, list[float]] = {name: [] for name in clocks}

    def timed(k: Kernel, names: tuple[str, ...]) -> float:
        before = {name: clocks[name].read() for name in names}
        seconds, _ = execute(k[1], code)
        for name in names:
            spent[name].append(clocks[name].between(before[name], clocks[name].read()))
        return seconds

    xs, ys = interleaved(
        runs,
        lambda: timed(plain, ("plain kernel",)),
        lambda: timed(proxy, ("proxy", "upstream")),
        warmup=1,
    )
    xs_lost = [w - c for w, c in zip(xs, spent["plain kernel"][-runs:], strict=True)]
    ys_lost = [w - c for w, c in zip(ys, spent["upstream"][-runs:], strict=True)]
    plain_s, wall = median(xs), median(ys)
    cpu = median(spent["proxy"][-runs:])
    return {
        "plain_s": plain_s,
        "proxy_s": wall,
        "ratio": wall / plain_s,
        "plain_lost_s": median(xs_lost),
        "proxy_lost_s": median(ys_lost),
        "ratio_same_work": (plain_s + median(ys_lost) - median(xs_lost)) / plain_s,
        "proxy_cpu_s": cpu,
        "proxy_core_percent": 100 * cpu / wall,
        "cpu_clock": "ticks" if any(c.coarse for c in clocks.values()) else "ns",
        "runs": runs,
    }


def sampling_cost(proxy: Kernel, hz: float, seconds: float) -> dict[str, Any]:
    """CPU the proxy spends (all its threads) while a ``sleep`` cell of ``seconds`` runs."""
    set_frequency(proxy, hz)
    clock = CpuClock(proxy_pid(proxy))
    before = clock.read()
    started = time.perf_counter()
    execute(proxy[1], SLEEP.format(seconds=seconds))
    wall = time.perf_counter() - started
    cpu = clock.between(before, clock.read())
    return {
        "hz": hz,
        "cell_s": wall,
        "proxy_cpu_s": cpu,
        "proxy_core_percent": 100 * cpu / wall,
        "cpu_clock": "ticks" if clock.coarse else "ns",
    }


def monitor_benchmarks(
    plain: Kernel, proxy: Kernel, quick: bool = False
) -> dict[str, dict[str, Any]]:
    n = calibrate(plain)
    runs = 3 if quick else 7
    sleep_s = 4.0 if quick else 10.0
    results = {
        "CPU-bound cell, 2 Hz": cpu_bound(plain, proxy, 2, n, runs),
        "CPU-bound cell, 20 Hz": cpu_bound(plain, proxy, 20, n, runs),
        "sleep cell sampling, 2 Hz": sampling_cost(proxy, 2, sleep_s),
        "sleep cell sampling, 20 Hz": sampling_cost(proxy, 20, sleep_s),
    }
    set_frequency(proxy, 2)
    return results


def print_table(results: dict[str, dict[str, Any]]) -> None:
    for name, row in results.items():
        if "ratio" in row:
            print(
                f"{name:<28} plain {row['plain_s']:.3f} s  proxy {row['proxy_s']:.3f} s  "
                f"ratio {row['ratio']:.3f}  same work {row['ratio_same_work']:.3f}  "
                f"proxy CPU {row['proxy_core_percent']:.2f} % of a core"
            )
        else:
            print(
                f"{name:<28} {row['cell_s']:.1f} s cell: "
                f"proxy CPU {row['proxy_cpu_s'] * 1000:.1f} ms"
                f" = {row['proxy_core_percent']:.3f} % of a core"
            )


if __name__ == "__main__":
    standalone(__doc__, monitor_benchmarks, print_table)

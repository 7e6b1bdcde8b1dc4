"""Monitoring cost: a CPU-bound cell's wall time through the proxy vs plain ipykernel, and the
CPU time the proxy process spends while a cell runs, at 2 and 20 samples per second.

Run: ``python benchmarks/bench_monitor.py``.
"""

from __future__ import annotations

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


def proxy_cpu_seconds(proxy: Kernel) -> float:
    times = psutil.Process(proxy[0].provisioner.process.pid).cpu_times()
    return float(times.user + times.system)


def set_frequency(proxy: Kernel, hz: float) -> None:
    _, reply = execute(proxy[1], f"%env JUMPER_REPORT_FREQUENCY={hz}")
    assert reply["content"]["status"] == "ok"


def cpu_bound(plain: Kernel, proxy: Kernel, hz: float, n: int, runs: int) -> dict[str, Any]:
    set_frequency(proxy, hz)
    code = CPU_BOUND.format(n=n)
    proxy_cpu: list[float] = []

    def on_proxy() -> float:
        before = proxy_cpu_seconds(proxy)
        seconds, _ = execute(proxy[1], code)
        proxy_cpu.append(proxy_cpu_seconds(proxy) - before)
        return seconds

    xs, ys = interleaved(runs, lambda: execute(plain[1], code)[0], on_proxy, warmup=1)
    wall = median(ys)
    cpu = median(proxy_cpu[-runs:])
    return {
        "plain_s": median(xs),
        "proxy_s": wall,
        "ratio": wall / median(xs),
        "proxy_cpu_s": cpu,
        "proxy_core_percent": 100 * cpu / wall,
        "runs": runs,
    }


def sampling_cost(proxy: Kernel, hz: float, seconds: float) -> dict[str, Any]:
    """CPU the proxy spends (all its threads) while a ``sleep`` cell of ``seconds`` runs."""
    set_frequency(proxy, hz)
    before = proxy_cpu_seconds(proxy)
    started = time.perf_counter()
    execute(proxy[1], SLEEP.format(seconds=seconds))
    wall = time.perf_counter() - started
    cpu = proxy_cpu_seconds(proxy) - before
    return {"hz": hz, "cell_s": wall, "proxy_cpu_s": cpu, "proxy_core_percent": 100 * cpu / wall}


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
                f"ratio {row['ratio']:.3f}  proxy CPU {row['proxy_core_percent']:.2f} % of a core"
            )
        else:
            print(
                f"{name:<28} {row['cell_s']:.1f} s cell: "
                f"proxy CPU {row['proxy_cpu_s'] * 1000:.1f} ms"
                f" = {row['proxy_core_percent']:.3f} % of a core"
            )


if __name__ == "__main__":
    standalone(__doc__, monitor_benchmarks, print_table)

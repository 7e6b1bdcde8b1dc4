"""The benchmark suite behind ``make bench``: jumper-proxy side by side with plain ipykernel.

Both kernels run in this one process's run and the work is interleaved (A B A B ...). Prints
one table of medians and ratios and writes the same figures to
``benchmarks/results/latest.json`` so that runs can be compared.

    python benchmarks/run.py [--quick] [--only relay,monitor,scorep,memory,startup]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psutil
from bench_handover import bench as handover_bench
from bench_handover import print_table as print_handover
from bench_handover import stand_in_env
from bench_monitor import monitor_benchmarks
from bench_relay import relay_benchmarks
from bench_scorep import bench as scorep_startup
from bench_scorep import print_table as print_scorep_startup
from bench_startup import print_startup, startup_benchmarks
from kernels import Kernel, execute, kernel, machine, proxy_kernelspec

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
GROUPS = ("relay", "monitor", "scorep", "memory", "startup")


def scorep_benchmarks(quick: bool) -> dict[str, Any]:
    """Instrumented cells with real Score-P beside plain ``python -m scorep`` (bench_scorep),
    and the handover in detail (in-process, the stand-in scorep)."""
    results: dict[str, Any] = {"startup": scorep_startup(quick)}
    sizes = [100 << 20] if quick else [100 << 20, 1 << 30]
    results["handover"] = asyncio.run(handover_bench(sizes, 1 if quick else 3, stand_in_env()))
    return results


def memory_benchmark(proxy: Kernel, cells: int) -> dict[str, Any]:
    """The proxy's resident memory before and after ``cells`` monitored cells with samples."""
    process = psutil.Process(proxy[0].provisioner.process.pid)
    execute(proxy[1], "%env JUMPER_REPORT_FREQUENCY=100")
    for _ in range(20):
        execute(proxy[1], "import time; time.sleep(0.03)")
    before = process.memory_info().rss
    started = time.perf_counter()
    for _ in range(cells):
        execute(proxy[1], "import time; time.sleep(0.03)")
    after = process.memory_info().rss
    execute(proxy[1], "%env JUMPER_REPORT_FREQUENCY=2")
    return {
        "cells": cells,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "growth_mb": (after - before) / 2**20,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller arrays")
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    args = parser.parse_args()
    groups = [g for g in args.only.split(",") if g]
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
    }
    if {"relay", "monitor", "memory"} & set(groups):
        with proxy_kernelspec() as name, kernel("python3") as plain, kernel(name) as proxy:
            if "relay" in groups:
                results["relay"] = relay_benchmarks(plain, proxy, args.quick)
            if "monitor" in groups:
                results["monitor"] = monitor_benchmarks(plain, proxy, args.quick)
            if "memory" in groups:
                results["memory"] = memory_benchmark(proxy, 200 if args.quick else 1000)
    if "scorep" in groups:
        results["scorep"] = scorep_benchmarks(args.quick)
    if "startup" in groups:
        results["startup"] = startup_benchmarks(args.quick)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print_report(results)
    print(f"\nwritten to {RESULTS}")


def print_report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    when, cpus, python = results["when"], machine["cpus"], machine["python"]
    print(f"jumper-proxy benchmarks, {when}, {cpus} CPUs, Python {python}")
    if "relay" in results:
        print("(floor: a minimal relay that only reads the headers and forwards, in its own")
        print(" process: what any relay costs here; see benchmarks/min_relay.py)")
    if "monitor" in results:
        print("(same work: the plain wall time plus the time the proxy's cell lost beyond its")
        print(" kernel's CPU time, over the plain wall time; see benchmarks/bench_monitor.py)")
    rows = {**results.get("relay", {}), **results.get("monitor", {})}
    if rows:
        header = f"{'plain':>10} {'proxy':>10} {'ratio':>7} {'floor':>7} {'same work':>10}"
        print(f"\n{'':<30} {header} {'proxy CPU':>10}")
    for name, row in rows.items():
        if "ratio" in row:
            cpu = f"{row['proxy_core_percent']:.2f} %" if "proxy_core_percent" in row else ""
            floor = f"{row['floor_ratio']:.3f}" if "floor_ratio" in row else ""
            same = f"{row['ratio_same_work']:.3f}" if "ratio_same_work" in row else ""
            plain, proxy = _t(row["plain_s"]), _t(row["proxy_s"])
            ratios = f"{row['ratio']:>7.3f} {floor:>7} {same:>10}"
            print(f"{name:<30} {plain:>10} {proxy:>10} {ratios} {cpu:>10}")
        else:
            cpu = f"{row['proxy_core_percent']:.3f} %"
            print(f"{name:<30} {'':>10} {_t(row['cell_s']):>10} {'':>7} {'':>7} {'':>10} {cpu:>10}")
    if "startup" in results:
        print()
        print_startup(results["startup"])
    if "memory" in results:
        m = results["memory"]
        print(
            f"\nproxy memory: {m['rss_before_mb']:.1f} MB, after {m['cells']} monitored cells "
            f"{m['rss_after_mb']:.1f} MB (+{m['growth_mb']:.1f} MB)"
        )
    if "scorep" in results:
        print()
        print_scorep_startup(results["scorep"]["startup"])
        print()
        print_handover(results["scorep"]["handover"])


def _t(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.3f} s"


if __name__ == "__main__":
    main()

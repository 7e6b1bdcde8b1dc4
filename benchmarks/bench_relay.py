"""Relay overhead: the proxy side by side with plain ipykernel in one run.

Measures the median ``pass`` round trip, 20,000 printed lines and a 50 MB display_data
payload, interleaving the kernels (A B C A B C ...). The third kernel is the floor: a minimal
relay (``min_relay.py``) that does nothing but relay, so the table shows what any
relay in its own process costs on this machine and what the proxy adds beyond it.
Run: ``python benchmarks/bench_relay.py``.
"""

from __future__ import annotations

from typing import Any

from kernels import Kernel, execute, kernel, median, standalone
from min_relay import min_relay_kernelspec

PRINT_LINES = "for i in range(20000):\n    print(i)"
DISPLAY_50MB = (
    "from IPython.display import display\ndisplay({'text/plain': 'x' * 50_000_000}, raw=True)"
)


def measure(kernels: dict[str, Kernel], code: str, runs: int, warmup: int = 3) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for i in range(warmup + runs):
        for name, k in kernels.items():
            seconds, reply = execute(k[1], code)
            assert reply["content"]["status"] == "ok", reply["content"]
            if i >= warmup:
                times[name].append(seconds)
    plain, floor, proxy = (median(times[name]) for name in ("plain", "floor", "proxy"))
    return {
        "plain_s": plain,
        "proxy_s": proxy,
        "ratio": proxy / plain,
        "floor_s": floor,
        "floor_ratio": floor / plain,
        "runs": runs,
    }


def relay_benchmarks(
    plain: Kernel, proxy: Kernel, quick: bool = False
) -> dict[str, dict[str, Any]]:
    with min_relay_kernelspec() as name, kernel(name) as floor:
        kernels = {"plain": plain, "floor": floor, "proxy": proxy}
        return {
            "pass round trip": measure(kernels, "pass", 100 if quick else 500),
            "20,000 printed lines": measure(kernels, PRINT_LINES, 5 if quick else 15),
            "50 MB display_data": measure(kernels, DISPLAY_50MB, 3 if quick else 9),
        }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'benchmark':<28} {'plain':>12} {'proxy':>12} {'ratio':>7} {'floor':>7}")
    for name, row in results.items():
        plain, proxy = row["plain_s"] * 1000, row["proxy_s"] * 1000
        ratios = f"{row['ratio']:>7.3f} {row['floor_ratio']:>7.3f}"
        print(f"{name:<28} {plain:>10.2f}ms {proxy:>10.2f}ms {ratios}")


if __name__ == "__main__":
    standalone(__doc__, relay_benchmarks, print_table)

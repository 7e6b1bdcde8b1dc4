"""Relay overhead: the proxy side by side with plain ipykernel in one run.

Measures the median ``pass`` round trip, 20,000 printed lines and a 50 MB display_data
payload, interleaving the two kernels (A B A B ...). Run: ``python benchmarks/bench_relay.py``.
"""

from __future__ import annotations

from typing import Any

from kernels import Kernel, execute, interleaved, median, standalone

PRINT_LINES = "for i in range(20000):\n    print(i)"
DISPLAY_50MB = (
    "from IPython.display import display\ndisplay({'text/plain': 'x' * 50_000_000}, raw=True)"
)


def measure(plain: Kernel, proxy: Kernel, code: str, runs: int) -> dict[str, Any]:
    def one(k: Kernel) -> float:
        seconds, reply = execute(k[1], code)
        assert reply["content"]["status"] == "ok", reply["content"]
        return seconds

    xs, ys = interleaved(runs, lambda: one(plain), lambda: one(proxy))
    return {
        "plain_s": median(xs),
        "proxy_s": median(ys),
        "ratio": median(ys) / median(xs),
        "runs": runs,
    }


def relay_benchmarks(
    plain: Kernel, proxy: Kernel, quick: bool = False
) -> dict[str, dict[str, Any]]:
    return {
        "pass round trip": measure(plain, proxy, "pass", 100 if quick else 500),
        "20,000 printed lines": measure(plain, proxy, PRINT_LINES, 5 if quick else 15),
        "50 MB display_data": measure(plain, proxy, DISPLAY_50MB, 3 if quick else 9),
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'benchmark':<28} {'plain':>12} {'proxy':>12} {'ratio':>7}")
    for name, row in results.items():
        plain, proxy = row["plain_s"] * 1000, row["proxy_s"] * 1000
        print(f"{name:<28} {plain:>10.2f}ms {proxy:>10.2f}ms {row['ratio']:>7.3f}")


if __name__ == "__main__":
    standalone(__doc__, relay_benchmarks, print_table)

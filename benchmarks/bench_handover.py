"""Cost of handing the notebook's state to a Score-P cell and back.

Runs Score-P cells through ``run_scorep_cell`` against a real ipykernel (started with
jupyter_client, the proxy's hidden-execution path imitated with silent ``execute_request`` and
``user_expressions``), with the stand-in ``scorep`` of ``tests/fake_scorep`` unless
``--real-scorep`` is given. Prints:

* the wall time of an empty Score-P cell (nothing in the namespace);
* for a numpy array of each size in the namespace and a cell that touches it
  (``a[0] += 1``), per marshaller and mode: the time to hand it in (kernel export + child load),
  to bring it back (child dump + kernel import), the sum, and the cell's wall time minus the
  empty cell's (which includes importing numpy in the child).

Each figure is the median of ``--repeat`` runs after one warm-up run.

    python benchmarks/bench_handover.py [--sizes 100M,1G] [--repeat 3] [--real-scorep]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from jumper_proxy.child import HandoverSettings, run_scorep_cell
from jumper_proxy.errors import HiddenExecutionError

ROOT = Path(__file__).resolve().parent.parent
FAKE_SCOREP = ROOT / "tests" / "fake_scorep"
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

RunHidden = Callable[[str, dict[str, str]], Any]


@asynccontextmanager
async def ipykernel(cwd: Path, env: dict[str, str]) -> Iterator[RunHidden]:
    """A python3 ipykernel and a ``run_hidden`` for it."""
    manager = AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel(env=env, cwd=str(cwd))
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)

        async def run_hidden(code: str, expressions: dict[str, str]) -> dict[str, Any]:
            msg_id = client.execute(
                code, silent=True, store_history=False, user_expressions=expressions
            )
            while True:
                reply = await client.get_shell_msg(timeout=600)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            content = reply["content"]
            if content["status"] != "ok":
                raise HiddenExecutionError(content["ename"], content["evalue"])
            return {
                name: ast.literal_eval(value["data"]["text/plain"])
                for name, value in content["user_expressions"].items()
            }

        yield run_hidden
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def cell(run_hidden: RunHidden, code: str, settings: HandoverSettings) -> dict[str, float]:
    started = time.perf_counter()
    result = await run_scorep_cell(
        code, settings, run_hidden, lambda _stream, _text: None, asyncio.Event()
    )
    timings = dict(result.timings)
    timings["wall"] = time.perf_counter() - started
    return timings


def median(runs: list[dict[str, float]], *keys: str) -> float:
    return statistics.median(sum(run[key] for key in keys) for run in runs)


async def bench(sizes: list[int], repeat: int, env: dict[str, str]) -> dict[str, Any]:
    """The empty cell per marshaller, and one row per array size, marshaller and mode."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        async with ipykernel(Path(work), env) as run_hidden:
            empty: dict[str, float] = {}
            for marshaller in ("dill", "cloudpickle"):
                settings = HandoverSettings(marshaller, "memory")
                await cell(run_hidden, "pass", settings)  # warm the page cache
                runs = [await cell(run_hidden, "pass", settings) for _ in range(repeat)]
                empty[marshaller] = median(runs, "wall")
            for size in sizes:
                await run_hidden(f"import numpy as np\na = np.ones({size // 8})", {})
                for marshaller in ("dill", "cloudpickle"):
                    for mode in ("memory", "disk"):
                        settings = HandoverSettings(marshaller, mode)
                        await cell(run_hidden, "a[0] += 1", settings)  # warm-up, not counted
                        runs = [
                            await cell(run_hidden, "a[0] += 1", settings) for _ in range(repeat)
                        ]
                        into = median(runs, "export", "child_load")
                        back = median(runs, "child_dump", "import")
                        added = median(runs, "wall") - empty[marshaller]
                        rows.append(
                            {
                                "array": _size(size),
                                "bytes": size,
                                "marshaller": marshaller,
                                "mode": mode,
                                "in_s": into,
                                "out_s": back,
                                "round_trip_s": into + back,
                                "added_s": added,
                            }
                        )
                await run_hidden("del a", {})
    return {"empty_cell_s": empty, "handover": rows}


def print_table(results: dict[str, Any]) -> None:
    for marshaller, seconds in results["empty_cell_s"].items():
        print(f"empty Score-P cell, {marshaller:11s}: {seconds:.3f} s")
    print()
    header = f"{'array':>8} {'marshaller':>11} {'mode':>6} "
    header += f"{'in s':>7} {'out s':>7} {'round s':>8} {'added s':>8}"
    print(header)
    print("-" * len(header))
    for row in results["handover"]:
        print(
            f"{row['array']:>8} {row['marshaller']:>11} {row['mode']:>6} {row['in_s']:7.3f} "
            f"{row['out_s']:7.3f} {row['round_trip_s']:8.3f} {row['added_s']:8.3f}"
        )


def stand_in_env() -> dict[str, str]:
    """This process's environment with the stand-in scorep (and its FAKE scorep-config) first
    on the paths."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAKE_SCOREP), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(FAKE_SCOREP / "bin"), env.get("PATH")) if p)
    return env


def _size(nbytes: int) -> str:
    for unit in ("G", "M", "K"):
        if nbytes >= UNITS[unit]:
            return f"{nbytes / UNITS[unit]:g} {unit}iB"
    return f"{nbytes} B"


def _parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100M,1G", help="array sizes, e.g. 100M,1G")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--real-scorep", action="store_true", help="use the installed scorep, not the stand-in"
    )
    args = parser.parse_args()
    env = dict(os.environ) if args.real_scorep else stand_in_env()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, scorep: ", end="")
    print("installed" if args.real_scorep else "stand-in (tests/fake_scorep)")
    sizes = [_parse_size(s) for s in args.sizes.split(",")]
    print_table(asyncio.run(bench(sizes, args.repeat, env)))


if __name__ == "__main__":
    main()

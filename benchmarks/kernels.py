"""Starting the kernels a benchmark compares: plain ipykernel and the proxy in front of it."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.kernelspec import install_kernelspec

PROXY_KERNEL = "jumper-proxy-bench"

Kernel = tuple[KernelManager, BlockingKernelClient]


@contextlib.contextmanager
def on_jupyter_path(data_dir: str) -> Iterator[None]:
    """Put a Jupyter data directory first on ``JUPYTER_PATH`` for a while."""
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (data_dir, old) if p)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


@contextlib.contextmanager
def proxy_kernelspec(env: dict[str, str] | None = None) -> Iterator[str]:
    """Install a proxy kernelspec wrapping ``python3`` into a temporary prefix for this run."""
    with tempfile.TemporaryDirectory(prefix="jumper-bench-") as prefix:
        install_kernelspec(
            prefix=prefix,
            name=PROXY_KERNEL,
            upstream=UpstreamSpec(kernel_name="python3"),
            env=env,
        )
        with on_jupyter_path(os.path.join(prefix, "share", "jupyter")):
            yield PROXY_KERNEL


@contextlib.contextmanager
def kernel(
    name: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    log: IO[bytes] | None = None,
) -> Iterator[Kernel]:
    """A started kernel of kernelspec ``name`` and its client; ``log`` takes its output."""
    kwargs: dict[str, Any] = {"startup_timeout": 60}
    if env:
        kwargs["env"] = {**os.environ, **env}
    if cwd:
        kwargs["cwd"] = cwd
    if log is not None:
        kwargs["stdout"] = kwargs["stderr"] = log
    km, kc = start_new_kernel(kernel_name=name, **kwargs)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(
    kc: BlockingKernelClient, code: str, timeout: float = 600
) -> tuple[float, dict[str, Any]]:
    """Seconds from sending ``code`` until its reply and its idle status have both arrived."""
    started = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        reply: dict[str, Any] = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return time.perf_counter() - started, reply


def interleaved(
    runs: int, a: Callable[[], float], b: Callable[[], float], warmup: int = 3
) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately (A B A B ...) so drift hits both alike."""
    for _ in range(warmup):
        a()
        b()
    xs, ys = [], []
    for _ in range(runs):
        xs.append(a())
        ys.append(b())
    return xs, ys


def median(values: list[float]) -> float:
    return statistics.median(values)


def standalone(
    description: str | None,
    measure: Callable[[Kernel, Kernel, bool], dict[str, dict[str, Any]]],
    show: Callable[[dict[str, dict[str, Any]]], None],
) -> None:
    """Run one benchmark module on its own: plain ipykernel and the proxy, ``--quick`` or not."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    with proxy_kernelspec() as name, kernel("python3") as plain, kernel(name) as proxy:
        show(measure(plain, proxy, args.quick))


def machine() -> dict[str, Any]:
    """What a result was measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }

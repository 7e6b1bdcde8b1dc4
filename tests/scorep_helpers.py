"""Helpers for the end-to-end tests that run real Score-P: reading back what Score-P wrote with
the real readers (pycubexr for ``profile.cubex``, the OTF2 bindings for ``traces.otf2``), and
the lines the proxy adds to an instrumented cell's output."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from kernel_helpers import ok, run, stdout

EXPERIMENT_LINE = "Score-P experiment directory: "


@contextlib.contextmanager
def started(
    name: str, cwd: Path | None = None
) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A proxy kernel of kernelspec ``name`` (working in ``cwd``), shut down afterwards."""
    km, kc = start_new_kernel(
        kernel_name=name, startup_timeout=60, **({"cwd": str(cwd)} if cwd else {})
    )
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=not km.is_alive())


@contextlib.contextmanager
def setting(kc: BlockingKernelClient, cell: str, back: str) -> Iterator[None]:
    """``cell`` (a settings magic) for a while, then ``back``."""
    ok(kc, cell)
    try:
        yield
    finally:
        ok(kc, back)


def failed(
    kc: BlockingKernelClient, code: str, timeout: float = 120
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``code``, which must fail: the reply's content and the IOPub messages."""
    reply, messages = run(kc, code, timeout=timeout)
    content: dict[str, Any] = reply["content"]
    assert content["status"] == "error", content
    return content, messages


def wait_for_output(kc: BlockingKernelClient, msg_id: str, text: str, timeout: float = 60) -> None:
    """Wait until the cell ``msg_id`` has streamed ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "stream"
            and text in msg["content"]["text"]
        ):
            return


def experiment_of(messages: list[dict[str, Any]]) -> Path:
    """The experiment directory an instrumented cell's output names."""
    lines = [line for line in stdout(messages).splitlines() if line.startswith(EXPERIMENT_LINE)]
    assert len(lines) == 1, stdout(messages)
    return Path(lines[0][len(EXPERIMENT_LINE) :])


def stderr(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
    )


def displays(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The data of each display_data output."""
    return [m["content"]["data"] for m in messages if m["msg_type"] == "display_data"]


def scorep_cell(
    kc: BlockingKernelClient, code: str, timeout: float = 120
) -> tuple[int, list[dict[str, Any]]]:
    """Run ``%%execute_with_scorep`` + ``code``, which must succeed: its execution count and
    its IOPub messages."""
    reply, messages = run(kc, "%%execute_with_scorep\n" + code, timeout=timeout)
    content = reply["content"]
    assert content["status"] == "ok", (content, [m["content"] for m in messages])
    return int(content["execution_count"]), messages


def profile_regions(experiment: Path) -> dict[str, tuple[int, float]]:
    """Every region of ``profile.cubex`` with its visits and inclusive time (pycubexr), summed
    over its call paths."""
    from pycubexr import CubexParser

    found: dict[str, tuple[int, float]] = {}
    with CubexParser(str(experiment / "profile.cubex")) as cube:
        visits = cube.get_metric_values(cube.get_metric_by_name("visits"))
        time = cube.get_metric_values(cube.get_metric_by_name("time"))
        for cnode in cube.all_cnodes():
            name = cube.get_region(cnode).name
            count, spent = found.get(name, (0, 0.0))
            found[name] = (
                count + int(visits.value(cnode)),
                spent + float(time.value(cnode, convert_to_inclusive=True)),
            )
    return found


def call_paths(experiment: Path) -> list[tuple[str, ...]]:
    """Every call path of ``profile.cubex``, from the root."""
    from pycubexr import CubexParser

    paths: list[tuple[str, ...]] = []
    with CubexParser(str(experiment / "profile.cubex")) as cube:

        def visit(cnode: Any, above: tuple[str, ...]) -> None:
            path = (*above, cube.get_region(cnode).name)
            paths.append(path)
            for child in cnode.get_children():
                visit(child, path)

        for root in cube.get_root_cnodes():
            visit(root, ())
    return paths


def trace_events(experiment: Path) -> Counter[tuple[str, str]]:
    """How many ``Enter``/``Leave`` events of each region the OTF2 trace holds."""
    import otf2

    counts: Counter[tuple[str, str]] = Counter()
    with otf2.reader.open(str(experiment / "traces.otf2")) as trace:
        for _, event in trace.events:
            kind = type(event).__name__
            if kind in ("Enter", "Leave"):
                counts[(kind, event.region.name)] += 1
    return counts


def shm_segments(owner: int | None = None) -> set[str]:
    """The proxy's handover segments in /dev/shm (of one proxy, by its pid)."""
    prefix = "jp" if owner is None else f"jp{owner}_"
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}

"""``%%execute_with_scorep`` through the proxy with real kernels.

The upstream's environment has the stand-in ``scorep`` package of ``tests/fake_scorep`` on
its path (Score-P itself cannot be installed here); everything else is real: the proxy, the
upstream ipykernel, the child interpreter, shared memory and files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PROXY_KERNEL, SCOREP_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from kernel_helpers import ok, run, shell_reply, stdout, value

pytestmark = pytest.mark.e2e

Kernel = tuple[KernelManager, BlockingKernelClient]


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KernelManager, BlockingKernelClient, Path]]:
    cwd = tmp_path_factory.mktemp("scorep-cwd")
    km, kc = start_new_kernel(kernel_name=SCOREP_KERNEL, startup_timeout=60, cwd=str(cwd))
    yield km, kc, cwd
    kc.stop_channels()
    km.shutdown_kernel()


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient, Path]) -> BlockingKernelClient:
    return kernel[1]


def failed(
    kc: BlockingKernelClient, code: str, timeout: float = 60
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    reply, msgs = run(kc, code, timeout=timeout)
    assert reply["content"]["status"] == "error", reply["content"]
    return reply["content"], msgs


def shm_segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("jp")}


SETUP = """\
import numpy as np
import collections as coll
counter = 1
doomed = "bye"
data = np.arange(1_000_000, dtype=np.float64)
def double(v):
    return 2 * v
class Point:
    def __init__(self, x):
        self.x = x
p = Point(3)
"""

SCOREP_CELL = """\
%%execute_with_scorep
counter += 1
created = double(counter)
del doomed
data[:3] = -1.0
q = Point(p.x + 1)
tally = coll.Counter("aab")
print("in the child:", counter, created, float(data.sum()) < 0 or data[0])
"""


def test_state_round_trip(kc: BlockingKernelClient) -> None:
    ok(kc, SETUP)
    before = shm_segments()
    msgs = ok(kc, SCOREP_CELL)
    assert "in the child: 2 4" in stdout(msgs)
    assert value(kc, "[counter, created, 'doomed' in globals(), data[:4].tolist()]") == [
        2,
        4,
        False,
        [-1.0, -1.0, -1.0, 3.0],
    ]
    assert value(kc, "[isinstance(q, Point), isinstance(p, Point), q.x, type(q) is Point]") == [
        True,
        True,
        4,
        True,
    ]
    assert value(kc, "[coll.__name__, np.__name__, tally['a']]") == ["collections", "numpy", 2]
    assert value(kc, "double(21)") == 42
    assert shm_segments() <= before


def test_experiment_directory_is_named(
    kernel: tuple[KernelManager, BlockingKernelClient, Path], kc: BlockingKernelClient
) -> None:
    msgs = ok(kc, "%%execute_with_scorep\nx_exp = 1")
    line = next(
        line
        for line in stdout(msgs).splitlines()
        if line.startswith("Score-P experiment directory: ")
    )
    path = Path(line.split(": ", 1)[1])
    assert path.parent == kernel[2] and path.name.startswith("scorep-") and path.is_dir()


@pytest.mark.parametrize("marshaller", ["dill", "cloudpickle"])
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_a_failing_child_leaves_the_state_untouched(
    kc: BlockingKernelClient, marshaller: str, mode: str, tmp_path: Path
) -> None:
    ok(
        kc,
        f"%%marshalling_settings\nMARSHALLER={marshaller}\nMODE={mode}\nSCOREP_KERNEL_PERSISTENCE_DIR={tmp_path}",
    )
    try:
        ok(kc, "fragile = [1, 2, 3]\nkeep = 'kept'")
        before = shm_segments()
        error, msgs = failed(
            kc,
            "%%execute_with_scorep\nfragile.append(4)\nkeep = 'changed'\nnew_name = 1\nraise ValueError('boom in the child')",
        )
        assert error["ename"] == "ValueError"
        assert error["evalue"] == "boom in the child"
        assert any("raise ValueError" in line for line in error["traceback"])
        assert value(kc, "[fragile, keep, 'new_name' in globals()]") == [[1, 2, 3], "kept", False]
        assert shm_segments() <= before
        assert list(tmp_path.iterdir()) == []
    finally:
        ok(
            kc,
            "%%marshalling_settings\nMARSHALLER=dill\nMODE=memory\nSCOREP_KERNEL_PERSISTENCE_DIR=",
        )


def test_a_child_killed_by_a_signal_is_named_and_changes_nothing(kc: BlockingKernelClient) -> None:
    ok(kc, "survivor = 'here'")
    before = shm_segments()
    error, _ = failed(
        kc,
        "%%execute_with_scorep\nsurvivor = 'gone'\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    )
    assert "SIGKILL" in error["evalue"]
    assert value(kc, "survivor") == "here"
    assert shm_segments() <= before


def test_output_streams_before_the_cell_ends(kc: BlockingKernelClient) -> None:
    msg_id = kc.execute(
        "%%execute_with_scorep\nprint('early', flush=True)\nimport time\ntime.sleep(2)\nprint('late')"
    )
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while "idle" not in seen and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and "early" in msg["content"]["text"]:
            seen.setdefault("early", time.monotonic())
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            seen["idle"] = time.monotonic()
    assert shell_reply(kc, msg_id)["content"]["status"] == "ok"
    assert seen["idle"] - seen["early"] > 1.5


def test_interrupt_stops_the_child_and_keeps_the_state(
    kernel: tuple[KernelManager, BlockingKernelClient, Path], kc: BlockingKernelClient
) -> None:
    km = kernel[0]
    ok(kc, "steady = 1")
    before = shm_segments()
    msg_id = kc.execute(
        "%%execute_with_scorep\nsteady = 2\nprint('started', flush=True)\nimport time\ntime.sleep(60)"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=30)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "stream"
            and "started" in msg["content"]["text"]
        ):
            break
    started = time.monotonic()
    km.interrupt_kernel()
    reply = shell_reply(kc, msg_id, timeout=30)["content"]
    assert time.monotonic() - started < 10
    assert reply["status"] == "error"
    assert value(kc, "steady") == 1
    assert shm_segments() <= before


def test_unserializable_objects_are_named_and_kept(kc: BlockingKernelClient) -> None:
    ok(kc, "gen = (i for i in range(3))\nplain_value = 5")
    msgs = ok(kc, "%%execute_with_scorep\nplain_value += 1")
    warnings = "".join(
        m["content"]["text"]
        for m in msgs
        if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
    )
    assert len(warnings.splitlines()) == 1 and "gen" in warnings, warnings
    assert value(kc, "[plain_value, next(gen)]") == [6, 0]


def test_binding_arguments_and_environment_reach_the_child(
    kernel: tuple[KernelManager, BlockingKernelClient, Path], kc: BlockingKernelClient
) -> None:
    ok(kc, "%%scorep_python_binding_arguments\n--instrumenter-type=cProfile --mpp=none")
    ok(kc, "%%scorep_env\nSCOREP_ENABLE_TRACING=true\nSCOREP_EXPERIMENT_DIRECTORY=my-experiment")
    try:
        msgs = ok(
            kc, "%%execute_with_scorep\nimport os\nprint(os.environ['SCOREP_ENABLE_TRACING'])"
        )
        assert "true" in stdout(msgs)
        record = json.loads((kernel[2] / "my-experiment" / "fake_scorep.json").read_text())
        assert record["options"] == ["--instrumenter-type=cProfile", "--mpp=none"]
    finally:
        ok(kc, "%%scorep_python_binding_arguments")
        ok(kc, "%%scorep_env\nSCOREP_EXPERIMENT_DIRECTORY=")


def test_settings_magics_reject_bad_values_and_keep_the_old_ones(kc: BlockingKernelClient) -> None:
    error, _ = failed(kc, "%%marshalling_settings\nMARSHALLER=json")
    assert "dill, cloudpickle" in error["evalue"]
    error, _ = failed(kc, "%%marshalling_settings\nMODE=tape")
    assert "memory, disk" in error["evalue"]
    error, _ = failed(kc, "%%scorep_env\nnot an assignment")
    assert "KEY=VALUE" in error["evalue"]
    shown = stdout(ok(kc, "%%marshalling_settings"))
    assert "MARSHALLER=dill" in shown and "MODE=memory" in shown
    assert "MARSHALLER=cloudpickle" in stdout(
        ok(kc, "%%serializer_settings\nSERIALIZER=cloudpickle")
    )
    ok(kc, "%%marshalling_settings\nMARSHALLER=dill")


def test_the_monitor_watches_the_child(kc: BlockingKernelClient) -> None:
    ok(
        kc,
        "%%execute_with_scorep\nimport time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass",
    )
    ok(kc, "%%perfdata_to_variable perf_scorep")
    record = value(
        kc,
        "{'code': perf_scorep[-1]['code'], 'cpu': perf_scorep[-1]['samples']['cpu_percent'].tolist()}",
    )
    assert record["code"].startswith("%%execute_with_scorep")
    assert max(record["cpu"]) >= 70  # the busy loop ran in the child, not in the kernel


def test_missing_scorep_is_one_clear_line() -> None:
    km, kc = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60)
    try:
        ok(kc, "x = 1")
        error, msgs = failed(kc, "%%execute_with_scorep\nx = 2")
        assert "pip install scorep" in error["evalue"]
        assert "\n" not in error["evalue"].strip()
        assert value(kc, "x") == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel()

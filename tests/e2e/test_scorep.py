"""``%%execute_with_scorep`` through the proxy with real kernels and real Score-P.

Everything is real: the proxy, the upstream ipykernel, the Score-P bindings and Score-P (from
``../shared/scorep``), the child interpreter, shared memory and files. What Score-P wrote is
read back with the real readers: pycubexr for ``profile.cubex``, the OTF2 bindings for the trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import SCOREP_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager
from kernel_helpers import ok, proxy_process, shell_reply, stdout, value
from scorep_helpers import (
    call_paths,
    experiment_of,
    failed,
    profile_regions,
    scorep_cell,
    setting,
    shm_segments,
    started,
    stderr,
    trace_events,
    wait_for_output,
)

pytestmark = [pytest.mark.e2e, pytest.mark.real_scorep]

Kernel = tuple[KernelManager, BlockingKernelClient, Path]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    cwd = tmp_path_factory.mktemp("scorep-cwd")
    with started(SCOREP_KERNEL, cwd) as (km, kc):
        yield km, kc, cwd


@pytest.fixture
def kc(kernel: Kernel) -> BlockingKernelClient:
    return kernel[1]


@pytest.fixture
def segments(kernel: Kernel) -> Callable[[], set[str]]:
    """The handover segments of this kernel's proxy (other proxies on the machine have theirs)."""
    pid = proxy_process(kernel[0]).pid
    return lambda: shm_segments(pid)


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
counter += 1
created = double(counter)
del doomed
data[:3] = -1.0
q = Point(p.x + 1)
tally = coll.Counter("aab")
print("in the child:", counter, created, float(data.sum()) < 0 or data[0])
"""


def test_state_round_trip(kc: BlockingKernelClient, segments: Callable[[], set[str]]) -> None:
    ok(kc, SETUP)
    before = segments()
    _, msgs = scorep_cell(kc, SCOREP_CELL)
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
    assert segments() <= before


def test_the_profile_holds_the_cell_as_a_region_with_its_functions(
    kernel: Kernel, kc: BlockingKernelClient
) -> None:
    ok(kc, "def leaf(n):\n    return sum(range(n))\ndef branch():\n    return leaf(10) + leaf(20)")
    count, msgs = scorep_cell(kc, "total = 0\nfor _ in range(5):\n    total += branch()")
    experiment = experiment_of(msgs)
    assert experiment.parent == kernel[2] and experiment.name.startswith("scorep-")
    regions = profile_regions(experiment)
    cell = f"__main__:cell [{count}]"
    assert regions[cell][0] == 1
    assert regions["__main__:branch"][0] == 5 and regions["__main__:leaf"][0] == 10
    # the user's code only: the program's root, the cell, its functions; nothing of the runner
    assert set(regions) == {"python3.11", cell, "__main__:branch", "__main__:leaf"}
    assert (
        "python3.11",
        cell,
        "__main__:branch",
        "__main__:leaf",
    ) in call_paths(experiment)


def test_the_top_regions_follow_the_cell(kc: BlockingKernelClient) -> None:
    ok(kc, "def busy():\n    return sum(i * i for i in range(200_000))")
    count, msgs = scorep_cell(kc, "busy(); busy()")
    summary = [d for d in (m["content"].get("data") for m in msgs) if d]
    assert len(summary) == 1
    text = summary[0]["text/plain"]
    assert text.startswith("Top regions by exclusive time (the cell: ")
    rows = text.splitlines()[2:]
    assert rows[0].split()[0] in ("__main__:busy", "__main__:<genexpr>")  # the most time
    assert any(row.startswith(f"  __main__:cell [{count}] ") for row in rows)
    busy = next(row for row in rows if row.startswith("  __main__:busy "))
    assert busy.split()[-1] == "2"  # visits
    html = summary[0]["text/html"]
    assert "<table" in html and "__main__:busy" in html and f"cell [{count}]" in html


@pytest.mark.parametrize("marshaller", ["dill", "cloudpickle"])
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_a_failing_child_leaves_the_state_untouched(
    kc: BlockingKernelClient,
    marshaller: str,
    mode: str,
    tmp_path: Path,
    segments: Callable[[], set[str]],
) -> None:
    ok(
        kc,
        f"%%marshalling_settings\nMARSHALLER={marshaller}\nMODE={mode}\nSCOREP_KERNEL_PERSISTENCE_DIR={tmp_path}",
    )
    try:
        ok(kc, "fragile = [1, 2, 3]\nkeep = 'kept'")
        before = segments()
        error, msgs = failed(
            kc,
            "%%execute_with_scorep\nfragile.append(4)\nkeep = 'changed'\nnew_name = 1\nraise ValueError('boom in the child')",
        )
        assert error["ename"] == "ValueError"
        assert error["evalue"] == "boom in the child"
        assert any("raise ValueError" in line for line in error["traceback"])
        assert value(kc, "[fragile, keep, 'new_name' in globals()]") == [[1, 2, 3], "kept", False]
        assert segments() <= before
        assert list(tmp_path.iterdir()) == []
        assert experiment_of(msgs).is_dir()  # Score-P wrote the failed cell's measurement
    finally:
        ok(
            kc,
            "%%marshalling_settings\nMARSHALLER=dill\nMODE=memory\nSCOREP_KERNEL_PERSISTENCE_DIR=",
        )


def test_a_child_killed_by_a_signal_is_named_and_changes_nothing(
    kc: BlockingKernelClient, segments: Callable[[], set[str]]
) -> None:
    ok(kc, "survivor = 'here'")
    before = segments()
    error, _ = failed(
        kc,
        "%%execute_with_scorep\nsurvivor = 'gone'\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    )
    assert "SIGKILL" in error["evalue"]
    assert value(kc, "survivor") == "here"
    assert segments() <= before


def test_output_streams_before_the_cell_ends(kc: BlockingKernelClient) -> None:
    msg_id = kc.execute(
        "%%execute_with_scorep\nprint('early', flush=True)\nimport time\ntime.sleep(2)\nprint('late')"
    )
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while "idle" not in seen and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and "early" in msg["content"]["text"]:
            seen.setdefault("early", time.monotonic())
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            seen["idle"] = time.monotonic()
    assert shell_reply(kc, msg_id)["content"]["status"] == "ok"
    assert seen["idle"] - seen["early"] > 1.5


def test_interrupt_stops_the_child_and_keeps_the_state(
    kernel: Kernel, kc: BlockingKernelClient, segments: Callable[[], set[str]]
) -> None:
    km = kernel[0]
    ok(kc, "steady = 1")
    before = segments()
    msg_id = kc.execute(
        "%%execute_with_scorep\nsteady = 2\nprint('started', flush=True)\nimport time\ntime.sleep(60)"
    )
    wait_for_output(kc, msg_id, "started")
    km.interrupt_kernel()
    reply = shell_reply(kc, msg_id, timeout=30)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert value(kc, "steady") == 1
    assert segments() <= before


def test_unserializable_objects_are_named_and_kept(kc: BlockingKernelClient) -> None:
    ok(kc, "gen = (i for i in range(3))\nplain_value = 5")
    _, msgs = scorep_cell(kc, "plain_value += 1")
    warnings = stderr(msgs)
    assert len(warnings.splitlines()) == 1 and "gen" in warnings, warnings
    assert value(kc, "[plain_value, next(gen)]") == [6, 0]


def test_binding_arguments_and_environment_reach_the_child(
    kernel: Kernel, kc: BlockingKernelClient
) -> None:
    with (
        setting(
            kc,
            "%%scorep_python_binding_arguments\n--instrumenter-type=profile --mpp=none",
            "%%scorep_python_binding_arguments",
        ),
        setting(
            kc,
            "%%scorep_env\nSCOREP_ENABLE_TRACING=true\nSCOREP_EXPERIMENT_DIRECTORY=my-experiment",
            "%%scorep_env\nSCOREP_ENABLE_TRACING=false\nSCOREP_EXPERIMENT_DIRECTORY=",
        ),
    ):
        ok(kc, "def traced():\n    return 1")
        count, msgs = scorep_cell(
            kc,
            "import os, scorep.instrumenter as si\n"
            "print(os.environ['SCOREP_ENABLE_TRACING'], type(si.get_instrumenter()).__name__)\n"
            "traced(); traced()",
        )
        assert "true ScorepProfile" in stdout(msgs)
        experiment = kernel[2] / "my-experiment"
        assert experiment_of(msgs) == experiment
        events = trace_events(experiment)
        assert events[("Enter", "__main__:traced")] == 2 == events[("Leave", "__main__:traced")]
        assert events[("Enter", f"__main__:cell [{count}]")] == 1
        assert not [region for _, region in events if "_Run" in region or "runner" in region]


def test_without_python_instrumentation_the_cell_is_a_user_region(
    kc: BlockingKernelClient,
) -> None:
    with setting(
        kc,
        "%%scorep_python_binding_arguments --noinstrumenter",
        "%%scorep_python_binding_arguments",
    ):
        ok(kc, "def unseen():\n    return 2")
        count, msgs = scorep_cell(
            kc,
            "import scorep.user\nunseen()\nwith scorep.user.region('mine'):\n    unseen()",
        )
        regions = profile_regions(experiment_of(msgs))
        assert set(regions) == {"python3.11", f"user:cell [{count}]", "user:mine"}


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
    scorep_cell(
        kc, "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass"
    )
    ok(kc, "%%perfdata_to_variable perf_scorep")
    record = value(
        kc,
        "{'code': perf_scorep[-1]['code'], 'cpu': perf_scorep[-1]['samples']['cpu_percent'].tolist()}",
    )
    assert record["code"].startswith("%%execute_with_scorep")
    assert max(record["cpu"]) >= 70  # the busy loop ran in the child, not in the kernel

"""Monitoring through the proxy with real kernels: what is measured, every magic, its bad
arguments, both exports, the live view, and that ordinary cells see nothing of it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import PROXY_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from kernel_helpers import (
    ok,
    proxy_process,
    run,
    shell_reply,
    stdout,
    upstream_processes,
    value,
    wait_gone,
)

pytestmark = pytest.mark.e2e

BURN_TWO_WORKERS = """\
import multiprocessing, time
def _burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
workers = [multiprocessing.get_context("fork").Process(target=_burn, args=(3,)) for _ in range(2)]
for w in workers: w.start()
for w in workers: w.join()
"""

# filled, so that every page is really in memory (a zeroed bytearray may not be)
HOLD_400MB = "import time\nblock = bytearray(b'x') * (400 * 1024 * 1024)\ntime.sleep(2)\ndel block"


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    cwd = tmp_path_factory.mktemp("kernel-cwd")
    km, kc = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60, cwd=str(cwd))
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    return kernel[1]


def magic_error(kc: BlockingKernelClient, code: str) -> str:
    reply, msgs = run(kc, code)
    assert reply["content"]["status"] == "error", f"{code!r} did not fail"
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert len(errors) == 1
    return f"{errors[0]['ename']}: {errors[0]['evalue']}"


def last_record(kc: BlockingKernelClient) -> dict[str, Any]:
    ok(kc, "%%perfdata_to_variable perf")
    text = stdout(
        ok(
            kc,
            "import json\n"
            "print(json.dumps({**perf[-1], 'samples': perf[-1]['samples'].to_dict('list')}))",
        )
    )
    return json.loads(text)


def test_nothing_recorded_yet_is_a_clear_error(kc: BlockingKernelClient) -> None:
    assert "No cell has been monitored yet" in magic_error(kc, "%%display_graph_for_last")
    assert "No cell has been monitored yet" in magic_error(kc, "%%display_code_history")


def test_worker_processes_count_for_the_cell(kc: BlockingKernelClient) -> None:
    ok(kc, BURN_TWO_WORKERS)
    record = last_record(kc)
    assert record["code"] == BURN_TWO_WORKERS
    assert max(record["samples"]["cpu_percent"]) >= 120
    assert max(record["samples"]["num_procs"]) >= 3
    assert 2.5 < record["duration"] < 10


def test_a_large_allocation_shows_in_memory(kc: BlockingKernelClient) -> None:
    ok(kc, HOLD_400MB)
    rss = last_record(kc)["samples"]["memory_rss_bytes"]
    assert max(rss) - min(rss) >= 380 * 1024 * 1024


def test_ordinary_cells_get_no_extra_output(kc: BlockingKernelClient) -> None:
    msgs = ok(kc, "print('just this')")
    kinds = [m["msg_type"] for m in msgs]
    assert kinds == ["status", "execute_input", "stream", "status"]


def test_frequency_set_with_env_takes_effect(kc: BlockingKernelClient) -> None:
    ok(kc, "%env JUMPER_REPORT_FREQUENCY=10")
    ok(kc, "import time; time.sleep(1.5)")
    samples = last_record(kc)["samples"]["time_s"]
    assert 12 <= len(samples) <= 20, len(samples)
    ok(kc, "%env JUMPER_REPORT_FREQUENCY=2")
    ok(kc, "import time; time.sleep(1.5)")
    assert 3 <= len(last_record(kc)["samples"]["time_s"]) <= 5


def test_code_history_and_code_for_index(kc: BlockingKernelClient) -> None:
    ok(kc, "value = 41 + 1")
    msgs = ok(kc, "%%display_code_history")
    display = next(m for m in msgs if m["msg_type"] == "display_data")["content"]["data"]
    assert "value = 41 + 1" in display["text/plain"]
    assert "<table>" in display["text/html"]
    lines = display["text/plain"].splitlines()
    index = next(line.split()[0] for line in lines if "value = 41 + 1" in line)
    assert stdout(ok(kc, f"%%display_code_for_index {index}")) == "value = 41 + 1\n"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%%display_code_for_index", "needs a cell index"),
        ("%%display_code_for_index x", "'x' is not a cell index"),
        ("%%display_code_for_index -1", "start at 0"),
        ("%%display_code_for_index 99999", "99999"),
        ("%%display_graph_for_index 99999", "99999"),
        ("%%display_graph_for_index one", "'one' is not a cell index"),
        ("%%display_graph_for_last cpu_percent bogus_metric", "bogus_metric"),
        ("%%perfdata_to_variable 1abc", "not a valid Python name"),
        ("%%perfdata_to_variable", "needs a name"),
        ("%%perfdata_to_json", "needs a name"),
        ("%%monitor_live sometimes", "'on' or 'off'"),
    ],
)
def test_bad_arguments_give_a_clear_error_and_the_kernel_lives(
    kc: BlockingKernelClient, code: str, message: str
) -> None:
    assert message in magic_error(kc, code)
    assert stdout(ok(kc, "print('alive')")) == "alive\n"


@pytest.mark.parametrize(
    "code",
    [
        "%%display_graph_for_last",
        "%%display_graph_for_index 0 cpu_percent,memory_rss_bytes",
        "%%display_graph_for_all",
    ],
)
def test_graphs_carry_bokeh_and_a_text_summary(kc: BlockingKernelClient, code: str) -> None:
    ok(kc, "import time; time.sleep(1.2)")
    msgs = ok(kc, code)
    data = next(m for m in msgs if m["msg_type"] == "display_data")["content"]["data"]
    assert "Bokeh" in data["text/html"]
    assert "cdn.bokeh.org" not in data["text/html"]
    assert "CPU" in data["text/plain"]


def test_perfdata_to_json_writes_both_files_where_the_kernel_runs(
    kernel: tuple[KernelManager, BlockingKernelClient], kc: BlockingKernelClient
) -> None:
    ok(kc, "import time; time.sleep(1.1)")
    msgs = ok(kc, "%%perfdata_to_json run1")
    written = [line.removeprefix("wrote ") for line in stdout(msgs).splitlines()]
    cwd = Path(stdout(ok(kc, "import os; print(os.getcwd())")).strip())
    assert written == [str(cwd / "run1_perfdata.json"), str(cwd / "run1_code.json")]
    perf = json.loads((cwd / "run1_perfdata.json").read_text())
    code = json.loads((cwd / "run1_code.json").read_text())
    assert len(perf["cells"]) == len(code) >= 1
    assert code[-1]["code"] == "import time; time.sleep(1.1)"
    assert "cpu_percent" in perf["cells"][-1]["samples"]


def test_perfdata_to_variable_without_pandas_gives_dicts_of_lists(kc: BlockingKernelClient) -> None:
    ok(kc, "import time; time.sleep(1.1)")
    ok(kc, "import sys\n_saved_pandas = sys.modules.get('pandas')\nsys.modules['pandas'] = None")
    try:
        ok(kc, "%%perfdata_to_variable plain")
        text = stdout(
            ok(
                kc,
                "sampled = [r for r in plain if r['samples']][-1]\n"
                "print(type(plain).__name__, type(sampled['samples']).__name__,"
                " 'cpu_percent' in sampled['samples'])",
            )
        )
        assert text.split() == ["list", "dict", "True"]
    finally:
        ok(kc, "import sys\nsys.modules['pandas'] = _saved_pandas\ndel _saved_pandas")
    ok(kc, "%%perfdata_to_variable frames")
    assert stdout(ok(kc, "print(type(frames[-1]['samples']).__name__)")).strip() == "DataFrame"


def test_live_view_updates_one_display_in_place(kc: BlockingKernelClient) -> None:
    ok(kc, "%%monitor_live on")
    try:
        msgs = ok(kc, "import time; time.sleep(3.5)")
    finally:
        ok(kc, "%%monitor_live off")
    shown = [m for m in msgs if m["msg_type"] == "display_data"]
    updates = [m for m in msgs if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert updates and all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    assert "running" in shown[0]["content"]["data"]["text/plain"]
    assert "finished after" in updates[-1]["content"]["data"]["text/plain"]
    msgs = ok(kc, "import time; time.sleep(0.5)")
    assert [m["msg_type"] for m in msgs if "display" in m["msg_type"]] == []


def test_cells_leave_no_thread_behind(
    kernel: tuple[KernelManager, BlockingKernelClient], kc: BlockingKernelClient
) -> None:
    proxy = proxy_process(kernel[0])
    ok(kc, "pass")
    time.sleep(0.3)
    before = proxy.num_threads()
    for _ in range(5):
        ok(kc, "import time; time.sleep(0.2)")
    time.sleep(0.3)
    assert proxy.num_threads() == before


def test_no_thread_or_process_after_shutdown() -> None:
    km, kc = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60)
    try:
        ok(kc, "import time; time.sleep(1)")
        pids = [proxy_process(km).pid] + [p.pid for p in upstream_processes(km)]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert wait_gone(pids) == []
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in pids
    )


def test_queued_cells_are_measured_apart(kc: BlockingKernelClient) -> None:
    """Cells sent together (Run All): each one's work is charged to itself alone."""
    burn = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass"
    first = kc.execute(burn)
    second = kc.execute(HOLD_400MB)
    for msg_id in (first, second):
        assert shell_reply(kc, msg_id, timeout=60)["content"]["status"] == "ok"
    ok(kc, "%%perfdata_to_variable queued")
    peaks = value(kc, "[max(r['samples']['memory_rss_bytes']) for r in queued[-2:]]")
    assert peaks[1] - peaks[0] >= 350 * 1024 * 1024, peaks  # the 400 MB belong to the second

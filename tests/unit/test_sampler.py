"""The sampler on real processes: tree attribution, memory, I/O, races, timing, bounds."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jumper_proxy.errors import ConfigurationError, MonitorError
from jumper_proxy.monitor import SAMPLE_COLUMNS, Sampler, open_gpu_probe

Spawn = Callable[[str], subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``python -c CODE`` with line pipes; every process is killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def _spawn(code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture(autouse=True)
def no_sample_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test may make a sample fail (the sampler logs such failures and carries on)."""
    with caplog.at_level(logging.WARNING, logger="jumper_proxy.monitor.sampler"):
        yield
    assert [r.getMessage() for r in caplog.records if r.name.startswith("jumper_proxy")] == []


def tell(proc: subprocess.Popen[str], line: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def hear(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (on an event, with a monotonic deadline) until ``predicate()`` holds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        pause.wait(0.02)


def cpu_seconds(samples: dict[str, list[Any]]) -> float:
    """The CPU time the samples account for: rate times interval, summed."""
    total, before = 0.0, 0.0
    for t, cpu in zip(samples["time_s"], samples["cpu_percent"], strict=True):
        total += cpu / 100 * (t - before)
        before = t
    return total


# The CPU seconds a root and all the children it reaped have used; printed before and after the
# work, the difference is the truth the samples must add up to.
REPORT_TREE_CPU = """
import resource
def tree_cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
"""


def test_worker_processes_count_towards_the_tree(spawn: Spawn) -> None:
    root = spawn(
        REPORT_TREE_CPU
        + """
import multiprocessing, sys, time
def burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
if __name__ == "__main__":
    input()
    print(tree_cpu(), flush=True)
    workers = [multiprocessing.Process(target=burn, args=(3,)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(tree_cpu(), flush=True)
    input()
"""
    )
    sampler = Sampler(lambda: [root.pid], frequency_hz=4)
    sampler.start()
    wait_for(lambda: sampler.snapshot() is not None)
    tell(root)
    t0 = time.monotonic()
    truth = -float(hear(root)) + float(hear(root))
    cores_used = truth / (time.monotonic() - t0)
    samples = sampler.stop()
    # Two busy workers use two cores of an idle 2-core machine; when other work on the machine
    # leaves them less, the samples must still show what they got.
    assert max(samples["cpu_percent"]) >= min(120, 90 * cores_used)
    assert max(samples["num_procs"]) >= 3
    # Workers reaped by the root are counted once, not again through its children's times.
    assert cpu_seconds(samples) == pytest.approx(truth, abs=0.2)


def test_children_born_and_gone_between_samples_are_counted(spawn: Spawn) -> None:
    root = spawn(
        REPORT_TREE_CPU
        + """
import subprocess, sys
burn = "import time\\nend = time.process_time() + 0.25\\nwhile time.process_time() < end: pass"
input()
print(tree_cpu(), flush=True)
for _ in range(4):
    subprocess.run([sys.executable, "-c", burn], check=True)
print(tree_cpu(), flush=True)
input()
"""
    )
    sampler = Sampler(lambda: [root.pid], frequency_hz=0.5)
    sampler.start()
    threading.Event().wait(0.1)  # the baseline is taken at once; there is no sample to wait for
    tell(root)
    truth = -float(hear(root)) + float(hear(root))
    samples = sampler.stop()
    assert truth >= 1.0
    assert cpu_seconds(samples) == pytest.approx(truth, abs=0.1)


def test_memory_of_a_large_allocation_shows(spawn: Spawn) -> None:
    root = spawn(
        """
import time
input()
block = bytearray(b"\\x01") * (400 * 2**20)
print("allocated", flush=True)
time.sleep(2)
del block
print("freed", flush=True)
input()
"""
    )
    sampler = Sampler(lambda: [root.pid], frequency_hz=10)
    sampler.start()
    wait_for(lambda: sampler.snapshot() is not None)
    tell(root)
    assert hear(root) == "allocated"
    assert hear(root) == "freed"
    wait_for(lambda: (sampler.snapshot() or {})["memory_rss_bytes"] < 200 * 2**20)
    samples = sampler.stop()
    rss = samples["memory_rss_bytes"]
    assert rss[0] < 100 * 2**20
    assert max(rss) - min(rss) >= 380 * 2**20
    assert all(0 < p <= 100 for p in samples["memory_percent"])


def test_io_of_a_writer_that_has_ended_stays_counted(spawn: Spawn, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    writer = f"""
import json, os, psutil
with open({str(target)!r}, "wb") as f:
    for _ in range(20):
        f.write(b"x" * 2**20)
        f.flush()
        os.fsync(f.fileno())
io = psutil.Process().io_counters()
print(json.dumps([io.write_bytes, io.write_count]), flush=True)
"""
    root = spawn(
        f"""
import subprocess, sys
input()
subprocess.run([sys.executable, "-c", {writer!r}], check=True)
input()
"""
    )
    sampler = Sampler(lambda: [root.pid], frequency_hz=10)
    sampler.start()
    tell(root)
    written_bytes, write_count = json.loads(hear(root))
    wait_for(lambda: (sampler.snapshot() or {}).get("num_procs") == 1)
    samples = sampler.stop()
    assert samples["io_write_count"][-1] >= write_count >= 20
    assert samples["io_write_bytes"][-1] >= written_bytes  # 0 where storage is not accounted
    for name in ("io_read_bytes", "io_write_bytes", "io_read_count", "io_write_count"):
        column = samples[name]
        assert all(b >= a for a, b in itertools.pairwise(column)), name


def test_processes_that_vanish_quickly_do_not_break_samples(spawn: Spawn) -> None:
    root = spawn(
        """
import subprocess
input()
for _ in range(60):
    subprocess.Popen(["true"]).wait()
print("done", flush=True)
input()
"""
    )
    sampler = Sampler(lambda: [root.pid, 2**22 + 12345], frequency_hz=50)
    sampler.start()
    tell(root)
    assert hear(root) == "done"
    samples = sampler.stop()
    lengths = {len(samples[name]) for name in SAMPLE_COLUMNS}
    assert lengths == {len(samples["time_s"])} and len(samples["time_s"]) >= 2


def test_a_root_that_is_gone_gives_empty_samples(spawn: Spawn) -> None:
    root = spawn("pass")
    root.wait()
    sampler = Sampler(lambda: [root.pid], frequency_hz=20)
    sampler.start()
    wait_for(lambda: sampler.snapshot() is not None)
    samples = sampler.stop()
    assert set(samples["num_procs"]) == {0}
    assert set(samples["cpu_percent"]) == {0.0}


def test_a_process_reparented_out_of_the_tree_is_no_longer_counted(spawn: Spawn) -> None:
    burner = "import time\\nend = time.monotonic() + 3\\nwhile time.monotonic() < end: pass"
    root = spawn(
        f"""
import os, subprocess, sys
input()
# The intermediate process exits at once: the burner is re-parented away from the root.
subprocess.run([sys.executable, "-c",
                "import subprocess, sys; subprocess.Popen([sys.executable, '-c', {burner!r}])"],
               check=True)
print("orphaned", flush=True)
input()
"""
    )
    sampler = Sampler(lambda: [root.pid], frequency_hz=10)
    sampler.start()
    tell(root)
    assert hear(root) == "orphaned"
    wait_for(lambda: (sampler.snapshot() or {}).get("num_procs") == 1)
    orphaned_at = (sampler.snapshot() or {})["time_s"]
    threading.Event().wait(1.0)  # the burner keeps burning for 3 s
    samples = sampler.stop()
    late = [
        cpu
        for t, cpu in zip(samples["time_s"], samples["cpu_percent"], strict=True)
        if t > orphaned_at + 0.15
    ]
    assert samples["num_procs"][-1] == 1
    assert len(late) >= 5 and max(late) < 50


def test_stop_is_prompt_and_samplers_share_one_thread() -> None:
    sampler = Sampler(lambda: [], frequency_hz=0.1)
    sampler.start()
    t0 = time.monotonic()
    samples = sampler.stop()
    assert time.monotonic() - t0 < 0.25
    assert samples["time_s"][0] == 0.0  # the baseline row
    assert len(samples["time_s"]) == 2  # and the final one
    assert sampler.stop() is samples
    assert sampler.samples.result() is samples
    many = [Sampler(lambda: [], frequency_hz=50) for _ in range(20)]
    for each in many:
        each.start()
    threading.Event().wait(0.1)
    assert len([t for t in threading.enumerate() if t.name == "jumper-sampler"]) == 1
    for each in many:
        assert len(each.stop()["time_s"]) >= 3


def test_samplers_running_at_once_keep_their_own_pace() -> None:
    slow = Sampler(lambda: [], frequency_hz=4)
    fast = Sampler(lambda: [], frequency_hz=40)
    slow.start()
    fast.start()
    threading.Event().wait(1.0)
    slow_times, fast_times = slow.stop()["time_s"], fast.stop()["time_s"]
    assert 4 <= len(slow_times) <= 7
    assert 30 <= len(fast_times) <= 45


def test_frequency_is_respected() -> None:
    sampler = Sampler(lambda: [], frequency_hz=10)
    sampler.start()
    threading.Event().wait(2.0)
    times = sampler.stop()["time_s"]
    assert 14 <= len(times) <= 23
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.1, abs=0.03)


def test_downsampling_bounds_the_samples_and_keeps_time_monotonic() -> None:
    sampler = Sampler(lambda: [], frequency_hz=100, max_samples=8)
    sampler.start()
    wait_for(lambda: sampler.interval_s >= 0.04)
    times = sampler.stop()["time_s"]
    assert len(times) <= 8
    assert all(b > a for a, b in itertools.pairwise(times))


def test_snapshot_is_the_latest_sample() -> None:
    sampler = Sampler(lambda: [], frequency_hz=20)
    assert sampler.snapshot() is None
    sampler.start()
    wait_for(lambda: sampler.snapshot() is not None)
    snap = sampler.snapshot()
    assert snap is not None and set(snap) == set(SAMPLE_COLUMNS)
    snap["time_s"] = -1.0
    assert (sampler.snapshot() or {})["time_s"] >= 0
    sampler.stop()


def test_node_metrics_per_core_and_no_gpu_without_a_driver() -> None:
    sampler = Sampler(lambda: [], frequency_hz=20, gpu=open_gpu_probe())
    sampler.start()
    wait_for(lambda: sampler.snapshot() is not None)
    samples = sampler.stop()
    import psutil

    assert all(len(cores) == psutil.cpu_count() for cores in samples["cpu_percent_per_core"])
    assert all(0 <= c <= 100 for cores in samples["cpu_percent_per_core"] for c in cores)
    assert samples["gpu_util_percent"] == [[]] * len(samples["time_s"])
    assert samples["gpu_memory_bytes"] == [[]] * len(samples["time_s"])


@pytest.mark.parametrize("frequency", [0, -1, math.nan, 1000])
def test_bad_frequencies_are_refused(frequency: float) -> None:
    with pytest.raises(ConfigurationError, match="frequency"):
        Sampler(lambda: [], frequency_hz=frequency)


def test_start_twice_and_stop_before_start_are_refused() -> None:
    sampler = Sampler(lambda: [], frequency_hz=1)
    with pytest.raises(MonitorError, match="never started"):
        sampler.stop()
    sampler.start()
    with pytest.raises(MonitorError, match="already started"):
        sampler.start()
    sampler.stop()


def test_no_final_sample_for_a_cell_too_short_to_keep_samples() -> None:
    short = Sampler(lambda: [os.getpid()], frequency_hz=1, min_rows=2)
    short.start()
    assert short.stop()["time_s"] == [0.0]  # the baseline alone: finish_record drops it anyway
    kept = Sampler(lambda: [os.getpid()], frequency_hz=1, min_rows=1)
    kept.start()
    assert len(kept.stop()["time_s"]) == 2  # baseline and final


def test_a_sampler_begun_in_the_caller_finishes_there_unless_scheduled() -> None:
    inline = Sampler(lambda: [os.getpid()], frequency_hz=20, min_rows=0)
    inline.begin()
    threading.Event().wait(0.3)  # not scheduled: no periodic samples
    inline.finish()
    assert inline.samples.done()  # resolved in this thread, no waiting
    samples = inline.samples.result()
    assert samples["time_s"][0] == 0.0 and len(samples["time_s"]) == 2
    assert samples["num_procs"] == [1, 1] and samples["cpu_percent"][1] >= 0

    handed_over = Sampler(lambda: [os.getpid()], frequency_hz=20)
    handed_over.begin()
    handed_over.schedule()
    threading.Event().wait(0.5)
    times = handed_over.stop()["time_s"]
    assert times[0] == 0.0 and len(times) >= 6
    assert all(b > a for a, b in itertools.pairwise(times))
    with pytest.raises(MonitorError, match="already started"):
        handed_over.begin()


def test_the_process_list_is_read_again_only_when_a_process_can_have_appeared(
    monkeypatch: pytest.MonkeyPatch, spawn: Spawn
) -> None:
    from jumper_proxy.monitor import sampler as sampler_module

    table = sampler_module._ProcessTable()
    monkeypatch.setattr(sampler_module, "_TABLE", table)
    listings = []
    real_pids = sampler_module._READER.pids
    monkeypatch.setattr(sampler_module._READER, "pids", lambda: listings.append(1) or real_pids())
    root = spawn(
        """
import subprocess, sys
input()
# the child lives until the root ends (its stdin closes)
child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         stdin=subprocess.PIPE)
input()
"""
    )
    sampler = Sampler(lambda: [root.pid], frequency_hz=20)
    sampler.begin()
    for _ in range(3):
        sampler._sample(time.monotonic())
    quiet = len(listings)
    tell(root)  # it starts a child: the next sample must list the processes and find it
    wait_for(lambda: (sampler._sample(time.monotonic()) or True) and len(listings) > quiet)
    wait_for(lambda: sampler._sample(time.monotonic())["num_procs"] == 2)
    assert sampler.stop()["num_procs"][0] == 1
    assert quiet <= 2  # the baseline's listing, and at most one for a fork elsewhere
